"""Writes the sample uploads in data/<customer>/ (seeded: the files come out the same every time).

    python data/generate.py
"""

import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def orders(rnd, count=3000):
    countries = [("US", "USD"), ("DE", "EUR"), ("FR", "EUR"), ("GB", "GBP"), ("JP", "JPY")]
    start = datetime(2026, 1, 1)
    for n in range(1, count + 1):
        country, currency = rnd.choice(countries)
        unit = rnd.randint(5, 400) * (100 if currency == "JPY" else 1)
        status = "cancelled" if rnd.random() < 0.04 else "paid"
        day = start + timedelta(minutes=37 * n)
        yield [f"A-{n:05d}", day.strftime("%Y-%m-%d"), country, currency,
               f"{unit}.{rnd.randint(0, 99):02d}" if currency != "JPY" else str(unit),
               rnd.randint(1, 5), status]


def contacts(rnd, count=2000):
    first = ["ada", "grace", "alan", "edsger", "barbara", "donald", "frances", "ken", "radia", "tim"]
    last = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "knuth", "allen", "thompson",
            "perlman", "berners-lee"]
    domains = ["example.com", "globex.example", "mail.example", "corp.example"]
    for n in range(1, count + 1):
        given, family = rnd.choice(first), rnd.choice(last)
        email = f"{given}.{family}{n % 97}@{rnd.choice(domains)}"
        roll = rnd.random()
        if roll < 0.03:
            email = email.replace("@", " at ")              # not an address
        elif roll < 0.06:
            email = "  " + email.upper() + " "               # fixable: case and spaces
        yield [f"{given.capitalize()} {family.capitalize()}", email, rnd.choice(["Globex", "Initech",
               "Hooli", "Umbrella", "Soylent"]), f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"]


def readings(rnd, count=2400):
    sensors = {"boiler-1": 71.0, "boiler-2": 68.5, "chiller-1": 6.0, "chiller-2": 7.5}
    start = datetime(2026, 3, 1)
    for n in range(count):
        sensor = list(sensors)[n % len(sensors)]
        value = rnd.gauss(sensors[sensor], 1.2)
        if rnd.random() < 0.01:
            value += rnd.choice([-1, 1]) * rnd.uniform(8, 15)    # a spike
        at = start + timedelta(seconds=15 * (n // len(sensors)))
        yield [sensor, at.strftime("%Y-%m-%dT%H:%M:%SZ"), f"{value:.2f}"]


def main():
    rnd = random.Random(20260401)
    write(HERE / "acme" / "orders.csv",
          ["order_id", "date", "country", "currency", "unit_price", "quantity", "status"],
          orders(rnd))
    write(HERE / "globex" / "contacts.csv", ["name", "email", "company", "signed_up"],
          contacts(rnd))
    write(HERE / "initech" / "readings.csv", ["sensor", "at", "celsius"], readings(rnd))


if __name__ == "__main__":
    main()
