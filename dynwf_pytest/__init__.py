"""Testing dynwf workflows with pytest.

Installing dynwf registers the pytest plugin (``dynwf_pytest.plugin``) through the ``pytest11``
entry point; its fixtures (``dynwf``, ``dynwf_tenant``) start the project's emulator for a test.
The API mirrors the platform's ``cloudflare:test`` workflow helpers in snake_case
(``introspect_instance``, ``introspect_workflow``, the modifiers, ``wait_for_step_result``,
``wait_for_status``, ``get_output``, ``get_error``), with the same error texts, and adds
``advance(duration)`` on the virtual clock, after Temporal's time-skipping test environment.

Names are imported on first use: pytest loads the plugin in every run of every project that has
dynwf installed, and a run that never asks for an emulator should not import one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.lazy import lazy_names

_EXPORTS = {
    "Emulator": "dynwf_pytest.emulator",
    "Tenant": "dynwf_pytest.emulator",
    "TenantRun": "dynwf_pytest.emulator",
    "current_emulator": "dynwf_pytest.emulator",
    "tenant_ids": "dynwf_pytest.emulator",
    "InstanceIntrospector": "dynwf_pytest.introspection",
    "IntrospectorError": "dynwf_pytest.introspection",
    "Modifier": "dynwf_pytest.introspection",
    "WorkflowIntrospector": "dynwf_pytest.introspection",
    "introspect_instance": "dynwf_pytest.introspection",
    "introspect_workflow": "dynwf_pytest.introspection",
}

if TYPE_CHECKING:
    from dynwf_pytest.emulator import Emulator, Tenant, TenantRun, current_emulator, tenant_ids
    from dynwf_pytest.introspection import (InstanceIntrospector, IntrospectorError, Modifier,
                                            WorkflowIntrospector, introspect_instance,
                                            introspect_workflow)


__getattr__ = lazy_names("dynwf_pytest", globals(), _EXPORTS)


__all__ = [
    "Emulator", "InstanceIntrospector", "IntrospectorError", "Modifier", "Tenant", "TenantRun",
    "WorkflowIntrospector", "current_emulator", "introspect_instance", "introspect_workflow",
    "tenant_ids",
]
