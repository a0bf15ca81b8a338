import unittest

from statuspage import overall, render


class RenderTest(unittest.TestCase):
    def test_overall_is_the_worst_state(self):
        self.assertEqual(overall([{"status": "operational"}]), "All systems operational")
        self.assertEqual(overall([{"status": "operational"}, {"status": "outage"}]),
                         "Major outage")

    def test_names_are_escaped(self):
        page = render([{"name": "<API>", "status": "operational", "uptime": 100}])
        self.assertIn("&lt;API&gt;", page)
        self.assertIn("100.00% uptime", page)


if __name__ == "__main__":
    unittest.main()
