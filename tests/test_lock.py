"""The lock (exact versions of the whole environment) satisfies pyproject.toml and is what `make` installs.

pyproject.toml keeps ranges for library users; `make demo` / `make test` and envs/mopeft.yaml install the
lock, so a checkout next year gets the versions that were tested. The extras and the lock's path are read
from the Makefile (one place): `make lock` resolves with the same EXTRAS that these tests check.
Each check is a function returning its problems, run on the real files and on small broken texts.
"""

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

# The one platform the lock is resolved for (torch's CUDA wheels, triton): Linux x86-64, CPython 3.11.
LOCK_ENV = default_environment() | {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
MACHINE_LOCAL = re.compile(r"file://|--(extra-)?index-url|--find-links|--trusted-host|(^|[\s(=])~?/\w")


def makefile_vars(text: str) -> dict[str, str]:
    """The Makefile's simple `NAME := value` variables (EXTRAS, LOCK)."""
    return {m[1]: m[2].strip() for m in re.finditer(r"^([A-Z_]+)\s*:?=(.*)$", text, re.MULTILINE)}


def lock_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every line that is not blank and not a comment."""
    return [(n, s) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and s[0] != "#"]


def lock_pins(text: str) -> dict[str, list[str]]:
    """Canonical name -> every version the lock pins for it (a name twice is a problem of its own)."""
    pins: dict[str, list[str]] = {}
    for _, line in lock_lines(text):
        name, _, version = line.partition("==")
        pins.setdefault(canonicalize_name(name), []).append(version)
    return pins


def required(pyproject: dict, extras: list[str]) -> list[Requirement]:
    """pyproject's dependencies plus those of `extras`, kept only where their markers hold on the lock's
    platform (an `extra == ...` marker holds for the extras that make installs)."""
    project = pyproject["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [
        r
        for r in reqs
        if r.marker is None or any(r.marker.evaluate(LOCK_ENV | {"extra": e}) for e in ["", *extras])
    ]


def format_problems(text: str) -> list[str]:
    """Lines that are not an exact `name==version` pin, or that tie the lock to one machine or index."""
    problems = [f"line {n}: not an exact pin: {line}" for n, line in lock_lines(text) if not PIN.match(line)]
    problems += [
        f"line {n}: machine-local: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if MACHINE_LOCAL.search(line)
    ]
    return problems


def satisfaction_problems(pyproject: dict, lock_text: str, extras: list[str]) -> list[str]:
    """Each requirement of pyproject (+ extras) needs exactly one pin in the lock, inside its specifier;
    pyproject's exact pins (torch/torchvision as a pair, ...) must be the lock's versions verbatim."""
    pins = lock_pins(lock_text)
    problems = [f"{name} pinned {len(v)} times: {v}" for name, v in pins.items() if len(v) > 1]
    name = canonicalize_name(pyproject["project"]["name"])
    if name in pins:
        problems.append(f"{name} itself is in the lock (it is installed with --no-deps -e .)")
    unknown = [e for e in extras if e not in pyproject["project"].get("optional-dependencies", {})]
    problems += [f"extra {e!r} is not in pyproject.toml" for e in unknown]
    for req in required(pyproject, [e for e in extras if e not in unknown]):
        versions = pins.get(canonicalize_name(req.name), [])
        if len(versions) != 1:
            problems.append(f"{req}: {len(versions)} pins in the lock")
        elif not req.specifier.contains(versions[0], prereleases=True):
            problems.append(f"{req}: the lock pins {versions[0]}")
        else:
            exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
            if exact and exact != versions:
                problems.append(f"{req}: the lock pins {versions[0]}, not pyproject's {exact[0]}")
    return problems


def install_problems(makefile: str) -> list[str]:
    """The venv target installs the lock, then the checkout without dependencies (nothing re-resolved),
    and depends on the lock so a new lock reinstalls; `make lock` writes that same LOCK with EXTRAS."""
    m = re.search(r"^\$\(BIN\)/mopeft:(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    if m is None:
        return ["no `$(BIN)/mopeft:` rule in the Makefile"]
    prerequisites, recipe = m[1].split(), m[2]
    pips = [line.split("pip install", 1)[1].split() for line in recipe.splitlines() if "pip install" in line]
    pips = [[a for a in args if a != "-q"] for args in pips]
    problems = []
    if "$(LOCK)" not in prerequisites:
        problems.append(f"`$(BIN)/mopeft` does not depend on $(LOCK): {prerequisites}")
    if pips != [["-r", "$(LOCK)"], ["--no-deps", "-e", "."]]:
        problems.append(f"the venv is not `pip install -r $(LOCK)` then `--no-deps -e .`: {pips}")
    lock_rule = re.search(r"^lock:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    if lock_rule is None or "scripts/lock.sh $(LOCK) $(EXTRAS)" not in lock_rule[1]:
        problems.append("`make lock` does not run scripts/lock.sh $(LOCK) $(EXTRAS)")
    return problems


def header_extras(lock_text: str) -> list[str] | None:
    """The extras the lock was resolved with, as its header (written by scripts/lock.sh) records them."""
    m = re.search(r"^#.*extras \[([\w,-]*)\]", lock_text, re.MULTILINE)
    return m[1].split(",") if m else None


# ---- the real files ---------------------------------------------------------------------------------


def _makefile() -> str:
    return (ROOT / "Makefile").read_text()


def _extras() -> list[str]:
    return makefile_vars(_makefile())["EXTRAS"].split(",")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock_text() -> str:
    return (ROOT / makefile_vars(_makefile())["LOCK"]).read_text()


def test_the_lock_satisfies_pyproject_and_its_extras():
    assert _extras() and set(_extras()) >= {"dev", "pipeline"}
    assert satisfaction_problems(_pyproject(), _lock_text(), _extras()) == []


def test_every_lock_line_is_an_exact_pin_and_nothing_machine_local():
    assert len(lock_lines(_lock_text())) > 50  # the whole environment, not just the direct dependencies
    assert format_problems(_lock_text()) == []


def test_torch_and_torchvision_are_pinned_as_pyproject_pins_them():
    deps = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in _pyproject()["project"]["dependencies"]
    }
    pins = lock_pins(_lock_text())
    for name in ("torch", "torchvision"):
        assert [s.operator for s in deps[name].specifier] == ["=="]
        assert pins[name] == [next(iter(deps[name].specifier)).version]


def test_make_installs_the_venv_from_the_lock():
    assert makefile_vars(_makefile())["LOCK"] == "requirements/lock-linux-x86_64-py311.txt"
    assert install_problems(_makefile()) == []


def test_the_lock_was_resolved_with_the_makefile_extras():
    assert header_extras(_lock_text()) == _extras()
    header = _lock_text().split("\n" + lock_lines(_lock_text())[0][1] + "\n")[0]
    assert "make lock" in header and "Linux x86-64, CPython 3.11" in header


# ---- each check fails when what it guards breaks (on small texts, whatever the real files hold) ------

PYPROJECT = {
    "project": {
        "name": "mopeft",
        "dependencies": [
            "torch==2.14.1",
            "numpy>=1.26,<3",
            'tomli>=2; python_version < "3.11"',
            'pywin32>=300; sys_platform == "win32"',
        ],
        "optional-dependencies": {"dev": ["pytest>=8"], "docs": ["sphinx>=7"]},
    }
}
LOCK = """# Exact versions ... CPython 3.11 ... extras [dev]. Refresh with `make lock`.
numpy==2.4.6
    # via mopeft (pyproject.toml)
pytest==9.2.0
torch==2.14.1
    # via
    #   mopeft (pyproject.toml)
"""
MAKEFILE = """EXTRAS := dev
LOCK   := requirements/lock.txt

$(BIN)/mopeft: pyproject.toml $(LOCK)
\ttest -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
\t$(BIN)/pip install -q -r $(LOCK)
\t$(BIN)/pip install -q --no-deps -e .
\ttouch $@

lock:
\tPYTHON=$(PYTHON) bash scripts/lock.sh $(LOCK) $(EXTRAS) $(LOCK_ARGS)
"""


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _with(*deps: str) -> dict:
    project = PYPROJECT["project"]
    return {"project": project | {"dependencies": [*project["dependencies"], *deps]}}


def test_the_small_texts_pass_every_check():
    """Requirements of other platforms and of extras that make does not install need no pin."""
    assert satisfaction_problems(PYPROJECT, LOCK, ["dev"]) == []
    assert format_problems(LOCK) == [] and install_problems(MAKEFILE) == []
    assert makefile_vars(MAKEFILE) == {"EXTRAS": "dev", "LOCK": "requirements/lock.txt"}
    assert header_extras(LOCK) == ["dev"]


def test_a_pin_outside_pyproject_range_or_pin_is_caught():
    def problems(old: str, new: str) -> list[str]:
        return satisfaction_problems(PYPROJECT, _replace(LOCK, old, new), ["dev"])

    assert problems("torch==2.14.1", "torch==2.13.0") == ["torch==2.14.1: the lock pins 2.13.0"]
    # `==2.14.1` admits 2.14.1+cpu (PEP 440), but the pair is pinned to the exact build pyproject names
    assert problems("torch==2.14.1", "torch==2.14.1+cpu") == [
        "torch==2.14.1: the lock pins 2.14.1+cpu, not pyproject's 2.14.1"
    ]
    assert problems("numpy==2.4.6", "numpy==1.25.2") == ["numpy<3,>=1.26: the lock pins 1.25.2"]


def test_a_requirement_missing_from_the_lock_is_caught():
    assert satisfaction_problems(_with("einops>=0.7"), LOCK, ["dev"]) == ["einops>=0.7: 0 pins in the lock"]
    linux = 'einops>=0.7; sys_platform == "linux"'
    assert satisfaction_problems(_with(linux), LOCK, ["dev"]) == [f"{linux}: 0 pins in the lock"]
    assert satisfaction_problems(PYPROJECT, LOCK, ["dev", "docs"]) == ["sphinx>=7: 0 pins in the lock"]
    assert satisfaction_problems(PYPROJECT, LOCK, ["dev", "gpu"]) == ["extra 'gpu' is not in pyproject.toml"]


def test_duplicates_and_the_project_itself_are_caught():
    twice = LOCK + "numpy==2.4.6\n"
    assert satisfaction_problems(PYPROJECT, twice, ["dev"]) == [
        "numpy pinned 2 times: ['2.4.6', '2.4.6']",
        "numpy<3,>=1.26: 2 pins in the lock",
    ]
    problems = satisfaction_problems(PYPROJECT, LOCK + "mopeft==0.1.0\n", ["dev"])
    assert problems == ["mopeft itself is in the lock (it is installed with --no-deps -e .)"]


def test_ranges_urls_and_machine_paths_are_caught():
    for broken in (
        _replace(LOCK, "numpy==2.4.6", "numpy>=2.2"),
        _replace(LOCK, "numpy==2.4.6", "numpy"),
        _replace(LOCK, "numpy==2.4.6", "numpy @ https://example.org/numpy.whl"),
        _replace(LOCK, "numpy==2.4.6", 'numpy==2.4.6; sys_platform == "linux"'),
        "--find-links /opt/wheels\n" + LOCK,
        "--extra-index-url file:///srv/simple\n" + LOCK,
        "-e .\n" + LOCK,
        LOCK + "    # via -r /home/me/reqs.txt\n",
    ):
        assert format_problems(broken), broken


def test_an_install_that_bypasses_the_lock_is_caught():
    for old, new in (
        ("pip install -q -r $(LOCK)", "pip install -q -e '.[dev,pipeline]'"),
        ("pip install -q --no-deps -e .", "pip install -q -e ."),
        ("$(BIN)/mopeft: pyproject.toml $(LOCK)", "$(BIN)/mopeft: pyproject.toml"),
        ("scripts/lock.sh $(LOCK) $(EXTRAS)", "scripts/lock.sh $(LOCK) dev,pipeline"),
    ):
        assert install_problems(_replace(MAKEFILE, old, new)), new
    extra = _replace(MAKEFILE, "\ttouch $@", "\t$(BIN)/pip install -q -e '.[dev]'\n\ttouch $@")
    assert install_problems(extra)


def test_a_lock_resolved_with_other_extras_is_told_apart():
    assert header_extras(_replace(LOCK, "extras [dev]", "extras [dev,pipeline]")) == ["dev", "pipeline"]
    assert header_extras(_replace(LOCK, "extras [dev]", "")) is None
