"""pytest wiring for the conprof-agent end-to-end suite.

A test that takes the `interp` fixture runs once per interpreter (ids "3.7" ... "3.13",
"3.11-debian"); `@pytest.mark.interps("3.12", ...)` narrows that to the ids it names. The set is
discovered at collection time; an interpreter that is missing on this machine still gets its test,
which FAILS saying which interpreter is missing. CONPROF_E2E_PYTHONS="3.8,3.12" restricts the set.
"""
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e_support as sup  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "interps(*ids): run only for these interpreter ids")


def pytest_generate_tests(metafunc):
    if "interp" not in metafunc.fixturenames:
        return
    ids = sup.selected_interpreter_ids()
    marker = metafunc.definition.get_closest_marker("interps")
    if marker:
        ids = [i for i in ids if i in marker.args]
    metafunc.parametrize("interp", ids, indirect=True, ids=ids)


@pytest.fixture
def interp(request):
    it = sup.interp(request.param)
    if it.path is None:
        pytest.fail("interpreter %s is missing: %s" % (it.id, it.missing), pytrace=False)
    return it


@pytest.fixture(scope="session")
def agent():
    path = sup.agent_path()
    if not (path.is_file() and os.access(str(path), os.X_OK)):
        pytest.fail("the agent %s does not exist: run `make build/conprof-agent` or set CONPROF_AGENT"
                    % path, pytrace=False)
    return path


@pytest.fixture
def spawn():
    """spawn(argv, env=None, cwd=None) -> Target; every target is killed when the test ends."""
    started = []

    def start(argv, env=None, cwd=None):
        t = sup.Target(argv, env=env, cwd=cwd)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


@pytest.fixture
def workload(spawn, interp):
    """workload(script, *args) -> a ready Target running workloads/<script> under `interp`."""

    def start(script, *args, env=None):
        path = script if os.path.isabs(str(script)) else sup.WORKLOADS / script
        t = spawn([interp.path, str(path)] + list(args), env=env)
        t.wait_ready()
        return t

    return start


@pytest.fixture
def public_tmp():
    """A temporary directory anyone may enter and write (pytest's tmp_path is root-only)."""
    d = tempfile.mkdtemp(prefix="conprof-e2e-")
    os.chmod(d, stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO | stat.S_ISVTX)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def require_root():
    if os.geteuid() != 0:
        pytest.fail("this test needs root (mount namespaces, another user's process)", pytrace=False)
