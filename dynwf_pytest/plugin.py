"""The pytest plugin (entry point ``dynwf`` in the ``pytest11`` group).

Fixtures:

- ``dynwf``: an :class:`~dynwf_pytest.Emulator` for the project under test, started on a fresh
  database in a temporary folder, closed after the test.
- ``dynwf_tenant``: a :class:`~dynwf_pytest.Tenant`, parametrized over every folder of the
  project's ``tenants/`` unless the test parametrizes it itself (``indirect=True``).
- ``dynwf_project`` (override it to choose the project) and ``dynwf_options`` (a dict of
  :class:`Emulator` options, override it for a module or a folder).

``async def`` tests that use ``dynwf`` (or ``dynwf_tenant``) run on the emulator's own event loop,
so no async plugin is needed. The project is, in order: ``@pytest.mark.dynwf(project=...)``, the
``dynwf_project`` ini option, the rootdir's wrangler file. Paths are relative to the rootdir.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from emulator import ISOLATION, ISOLATIONS, DynwfError

if TYPE_CHECKING:  # imported when a test asks for them: every pytest run loads this plugin
    from dynwf_pytest.emulator import Emulator, Tenant

MARKER = "dynwf"
TENANT_FIXTURE = "dynwf_tenant"
DEFAULT_TIMEOUT_S = 120.0
_OPTION_NAMES = ("isolation", "time_skipping", "start", "stall_grace_s", "host_options")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("dynwf_project", "the project the dynwf fixtures run: its wrangler file or the "
                  "folder holding it, relative to the rootdir (default: the rootdir)")
    parser.addini("dynwf_isolation", "where tenant code runs in dynwf tests: "
                  + " or ".join(f"{mode} (default)" if mode == ISOLATION else mode
                                for mode in ISOLATIONS), default=ISOLATION)
    parser.addini("dynwf_time_skipping", "whether waits in dynwf tests skip over sleeps and retry "
                  "back-offs (default: true)", type="bool", default=True)
    parser.addini("dynwf_timeout", "real seconds an async dynwf test may run "
                  f"(default: {DEFAULT_TIMEOUT_S:g})", default=str(DEFAULT_TIMEOUT_S))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(project=None, isolation=None, time_skipping=None, timeout=None): "
        "options of the dynwf emulator for this test (see dynwf_pytest)")


# ---- which project ----------------------------------------------------------------------------

def _marker_option(node: Any, name: str) -> Any:
    for marker in node.iter_markers(MARKER):
        if name in marker.kwargs:
            return marker.kwargs[name]
    return None


def _project_setting(config: pytest.Config, node: Any) -> Path:
    chosen = _marker_option(node, "project") or config.getini("dynwf_project") or "."
    path = Path(chosen)
    return path if path.is_absolute() else config.rootpath / path


@pytest.fixture
def dynwf_project(request: pytest.FixtureRequest) -> Path:
    """The wrangler file of the project under test."""
    from dynwf_pytest.emulator import find_project
    where = _project_setting(request.config, request.node)
    try:
        return find_project(where)
    except DynwfError as exc:
        pytest.fail(f"dynwf: {exc.message} (set the dynwf_project ini option, mark the test with "
                    "@pytest.mark.dynwf(project=...), or override the dynwf_project fixture)",
                    pytrace=False)


@pytest.fixture
def dynwf_options() -> dict[str, Any]:
    """Emulator options for the tests in scope (override to change them)."""
    return {}


# ---- the emulator -----------------------------------------------------------------------------

@pytest.fixture
def dynwf(request: pytest.FixtureRequest, dynwf_project: Path, dynwf_options: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator["Emulator"]:
    """The project's emulator: engine on a fresh database, virtual clock, isolates."""
    from dynwf_pytest.emulator import Emulator
    config = request.config
    options: dict[str, Any] = {"isolation": config.getini("dynwf_isolation") or ISOLATION,
                               "time_skipping": config.getini("dynwf_time_skipping")}
    options.update(dynwf_options)
    for name in _OPTION_NAMES:
        value = _marker_option(request.node, name)
        if value is not None:
            options[name] = value
    if options["isolation"] not in ISOLATIONS:
        pytest.fail(f"dynwf: isolation must be 'process' or 'inline', not {options['isolation']!r}",
                    pytrace=False)
    emulator = Emulator(dynwf_project, state_dir=tmp_path_factory.mktemp("dynwf"), **options)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture
def dynwf_tenant(request: pytest.FixtureRequest, dynwf: "Emulator") -> "Tenant":
    """One tenant of the project, by id (the test's parameter)."""
    tenant_id = getattr(request, "param", None)
    if tenant_id is None:
        pytest.fail(f"dynwf: {TENANT_FIXTURE} needs a tenant id: the project has no "
                    f"tenants/<id>/ folders to run over; parametrize it, e.g. "
                    f"@pytest.mark.parametrize('{TENANT_FIXTURE}', ['acme'], indirect=True)",
                    pytrace=False)
    return dynwf.tenant(tenant_id)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test that takes ``dynwf_tenant`` once per tenant folder of the project."""
    if TENANT_FIXTURE not in metafunc.fixturenames or _parametrizes_tenant(metafunc):
        return
    from dynwf_pytest.emulator import tenant_ids
    try:
        ids = tenant_ids(_project_setting(metafunc.config, metafunc.definition))
    except DynwfError:
        return  # no project here: the fixture explains when the test runs
    if ids:
        metafunc.parametrize(TENANT_FIXTURE, ids, indirect=True, ids=ids)


def _parametrizes_tenant(metafunc: pytest.Metafunc) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if TENANT_FIXTURE in names:
            return True
    return False


# ---- async tests ------------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that uses the emulator on the emulator's loop."""
    __tracebackhide__ = True
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if "dynwf" not in pyfuncitem.funcargs:
        return None
    from dynwf_pytest.emulator import Emulator
    emulator = pyfuncitem.funcargs["dynwf"]
    if not isinstance(emulator, Emulator):
        return None
    timeout = _marker_option(pyfuncitem, "timeout")
    if timeout is None:
        timeout = float(pyfuncitem.config.getini("dynwf_timeout") or DEFAULT_TIMEOUT_S)
    testargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    emulator.run(pyfuncitem.obj(**testargs), timeout=timeout or None)
    return True
