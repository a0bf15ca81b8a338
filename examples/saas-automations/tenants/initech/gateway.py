"""A payment gateway's sandbox, as Initech's code sees it: test cards with known behaviour.

Like the test card numbers of real payment sandboxes, each token behaves one way every time:

- ``tok_visa``: approved at once;
- ``tok_flaky``: the gateway answers "503 Service Unavailable" to the first two attempts of a
  charge, then approves it (an outage that clears up);
- ``tok_declined``: declined by the issuer; retrying can never help.

A charge is keyed by its invoice (an idempotency key), so a retried attempt can never charge twice.
"""

import hashlib


class GatewayUnavailable(Exception):
    """The gateway could not answer: worth retrying later."""


class CardDeclined(Exception):
    """The issuer refused the card: retrying will not change that."""


def charge(card, invoice, amount_cents, attempt):
    if card == "tok_declined":
        raise CardDeclined(f"card declined by the issuer (invoice {invoice})")
    if card == "tok_flaky" and attempt <= 2:
        raise GatewayUnavailable(f"503 Service Unavailable from the gateway (attempt {attempt})")
    if card not in ("tok_visa", "tok_flaky"):
        raise CardDeclined(f"unknown test card {card!r}")
    digest = hashlib.sha256(f"{invoice}:{amount_cents}".encode()).hexdigest()[:12]
    return {"charge_id": f"ch_{digest}", "amount_cents": amount_cents, "card": card}
