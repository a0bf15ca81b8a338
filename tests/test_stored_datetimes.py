"""Datetimes as stored values (docs/semantics.md, "Stored values"): a workflow may return the event
it received, and a step may return a datetime, in the host and across the step wire alike."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from emulator.errors import NotSerialisableError
from emulator.rules.limits import encode_json
from emulator.rules.values import decode_json, display_json
from parity_projects import WHERE, binding_of, write_parity

SOURCE = '''
from datetime import datetime, timedelta, timezone

from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("when")
        async def when():
            return {"at": datetime(2026, 1, 2, 3, 4, 5, 678901,
                                   tzinfo=timezone(timedelta(hours=2)))}

        first = await when()
        await step.sleep("nap", "1 hour")      # hibernates: what follows runs on a replay
        return {"event": event, "when": first, "type": type(first["at"]).__name__}
'''


@pytest.fixture(params=WHERE)
def where(request):
    return request.param


@pytest.fixture
def dynwf_project(tmp_path, where):
    return write_parity(tmp_path / "project", where, SOURCE)


async def test_a_workflow_returns_its_event_and_a_steps_datetime(dynwf, where):
    """§2.1, "Stored values": the event's timestamp and a step's datetime are stored and come back
    as naive UTC datetimes, to the millisecond; the same after a replay."""
    binding = binding_of(dynwf, where)
    instance = await binding.create({"id": "d1", "params": {"n": 1}})
    o1 = dynwf.introspect_instance(binding if where == "host" else dynwf.tenant("parity"), "d1")
    await o1.wait_for_status("complete")
    output = (await instance.status())["output"]
    stamp = output["event"]["timestamp"]
    assert isinstance(stamp, datetime) and stamp.tzinfo is None
    assert stamp == (await o1.get_output())["event"]["timestamp"]
    assert output["event"]["payload"] == {"n": 1}
    assert output["event"]["instanceId"] == "d1"
    # 05:04:05.678901 at UTC+2 is 01:04:05.678 UTC: a Date keeps milliseconds
    assert output["when"] == {"at": datetime(2026, 1, 2, 1, 4, 5, 678000)}
    assert output["type"] == "datetime"       # read back after the replay, still a datetime
    assert await o1.wait_for_step_result("when") == {"at": datetime(2026, 1, 2, 1, 4, 5, 678000)}
    # JSON surfaces show the text a Date serialises to
    (public,) = [s for s in o1.steps() if s["name"] == "when"]
    assert public["result"] == {"at": "2026-01-02T01:04:05.678Z"}


def test_datetimes_are_tagged_and_read_back():
    """"Stored values": the tag, the precision, the reserved key, and what is still refused."""
    value = {"at": datetime(2026, 5, 6, 7, 8, 9, 123456), "n": [1, "x"]}
    text = encode_json(value, what="v")
    assert text == '{"at":{"$datetime":"2026-05-06T07:08:09.123Z"},"n":[1,"x"]}'
    assert decode_json(text) == {"at": datetime(2026, 5, 6, 7, 8, 9, 123000), "n": [1, "x"]}
    assert display_json(text) == {"at": "2026-05-06T07:08:09.123Z", "n": [1, "x"]}
    aware = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert decode_json(encode_json(aware, what="v")) == datetime(2026, 1, 1, 5)
    with pytest.raises(NotSerialisableError, match=r"key '\$datetime' is reserved"):
        encode_json({"$datetime": "2026-01-01T00:00:00.000Z"}, what="v")
    with pytest.raises(NotSerialisableError, match="key '\\$datetime' is reserved"):
        encode_json([{"$datetime": 1, "other": 2}], what="v")

    class Stamp(datetime):
        pass
    with pytest.raises(NotSerialisableError, match="values of type Stamp cannot be stored"):
        encode_json(Stamp(2026, 1, 1), what="v")
    with pytest.raises(NotSerialisableError, match="values of type date cannot be stored"):
        encode_json(datetime(2026, 1, 1).date(), what="v")
    # a tag that does not parse (an isolate may send any JSON) is left as it is
    assert decode_json('{"$datetime":"yesterday"}') == {"$datetime": "yesterday"}
    assert json.loads(text)["at"] == {"$datetime": "2026-05-06T07:08:09.123Z"}
