"""The saas-automations tenants tested with dynwf's pytest plugin (run from this folder:
``python -m pytest -q``). Each test gets the project's emulator: the dispatcher, the engine on a
fresh database, a virtual clock and real isolates."""

import pytest


async def test_initech_retries_a_flaky_gateway_then_pays(dynwf):
    run = await dynwf.tenant("initech").run({"invoice": "INV-7", "card": "tok_flaky"})
    assert run.status == "complete"
    assert run.output["status"] == "paid"
    assert run.output["charge"]["attempts"] == 3        # two gateway failures, then success


async def test_initech_records_a_declined_card_instead_of_crashing(dynwf):
    run = await dynwf.tenant("initech").run({"invoice": "INV-8", "card": "tok_declined"})
    assert run.status == "complete"
    assert run.output["status"] == "payment_failed"


async def test_initech_charge_can_be_mocked_so_the_gateway_is_never_called(dynwf):
    initech = dynwf.tenant("initech")
    async with dynwf.introspect_workflow(initech) as workflow:
        await workflow.modify_all(lambda m: m.mock_step_result(
            {"name": "charge card"}, {"charge_id": "ch_mock", "attempts": 1}))
        run = await initech.run({"invoice": "INV-9", "card": "tok_declined"})
    assert run.output["status"] == "paid"
    assert run.output["charge"] == {"charge_id": "ch_mock", "attempts": 1}


async def test_acme_sleeps_a_day_between_welcome_and_nudge(dynwf):
    acme = dynwf.tenant("acme")
    instance = await acme.create({"email": "ada@example.com", "projects_created": 2})
    async with dynwf.introspect_instance(acme, instance.id) as onboarding:
        await onboarding.wait_for_status("complete")     # the one-day sleep is skipped
        output = await onboarding.get_output()
    assert output["path"] == "upgrade"


@pytest.mark.parametrize("tenant", ["acme", "initech"])
async def test_tenants_complete_without_events(dynwf, tenant):
    run = await dynwf.tenant(tenant).run({})
    assert run.status == "complete", run.error
