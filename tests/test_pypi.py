"""PyPI packages in conda envs, on the real CPython of tests/realpkgs.py: refused where they
would overwrite a conda package's file, recorded, exported, locked, re-created exactly,
packed and staged. Wheels come from the test cache (`wheel_for_test`) through `--find-links`,
so the suite runs offline once the cache is full."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from hpcenv import engine, pipstep, pypi
from hpcenv.channel import PackageRecipe, build_channel
from hpcenv.errors import RefusedError
from tests.conftest import IS_ROOT, need
from tests.foreign import rattler_prefix
from tests.fs import cli_env, hpcenv, snapshot
from tests.realpkgs import PYVER, SITE, TQDM, wheel_for_test
from tests.test_real_packages import world_writable
from tests.users import chown_tree, ensure_users, hpcenv_as, readable_copy

OLDSIX_PY = "# six, as a conda package vendors it\n__version__ = '0.0.conda'\n"


@pytest.fixture(scope="module")
def wheels(request) -> dict[str, Path]:
    return {
        "six": wheel_for_test(request, "six", "1.16.0"),
        "tqdm": wheel_for_test(request, *TQDM),
    }


@pytest.fixture(scope="module")
def clash_channel(tmp_path_factory) -> str:
    """`oldsix`: a conda package that owns site-packages/six.py (as vendoring packages do)."""
    spec = PackageRecipe("oldsix", "1.0", depends=("python",), files={f"{SITE}/six.py": OLDSIX_PY})
    egg = PackageRecipe(  # installed the old way: an .egg-info file, no RECORD
        "legacy-six", "1.0", depends=("python",),
        files={f"{SITE}/legacy_six.py": "", f"{SITE}/legacy_six-1.0-py{PYVER}.egg-info": ""},
    )  # fmt: skip
    return build_channel(tmp_path_factory.mktemp("clash-channel"), [spec, egg])


@pytest.fixture
def h(real_channel, clash_channel, wheels, tmp_path):
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    env = cli_env(home, storage)
    assert hpcenv("setup", "--yes", env=env).returncode == 0
    index = ["--no-index", *(f"--find-links {w.parent}" for w in wheels.values())]
    reqs = tmp_path / "index.txt"
    reqs.write_text("\n".join(index) + "\n")
    return {
        "env": env, "home": home, "storage": storage, "tmp": tmp_path, "index": index,
        "channels": [real_channel.url, clash_channel], "wheels": wheels, "index_file": reqs,
    }  # fmt: skip


def channel_args(h) -> list[str]:
    return [arg for c in h["channels"] for arg in ("-c", c)]


def run(h, *args, **extra) -> subprocess.CompletedProcess:
    return hpcenv(*args, env={**h["env"], **extra}, stdin=subprocess.DEVNULL)


def ok(h, *args, **extra) -> subprocess.CompletedProcess:
    r = run(h, *args, **extra)
    assert r.returncode == 0, r.stderr
    return r


def env_yml(h, name: str, conda: list[str], pip: list[str]) -> Path:
    lines = [f"name: {name}", "channels:", *(f"  - {c}" for c in h["channels"])]
    lines += ["dependencies:", *(f"  - {c}" for c in conda)]
    if pip:
        lines += ["  - pip:", *(f"    - {r}" for r in [*h["index"], *pip])]
    path = h["tmp"] / f"{name}.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def prefix_of(h, name: str) -> Path:
    return h["storage"] / ".conda" / "envs" / name


def pypi_record(prefix: Path) -> dict[str, tuple[str, str, str | None]]:
    data = json.loads((prefix / "etc" / "hpcenv" / "pypi.json").read_text())
    return {p["name"]: (p["version"], p["url"], p["sha256"]) for p in data["packages"]}


def conda_records(prefix: Path) -> dict[str, tuple[str, str, str]]:
    return {p.name: (p.version, p.build, p.sha256) for p in engine.installed_packages(prefix)}


def in_env(h, name: str, code: str) -> str:
    return ok(h, "run", name, "--", "python", "-c", code).stdout.strip()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- clobber refused


def test_create_whose_pip_section_overwrites_a_conda_file_is_refused_and_makes_nothing(h):
    yml = env_yml(h, "clash", ["python", "oldsix"], ["six==1.16.0"])
    home_before = snapshot(h["home"])
    r = run(h, "create", "-f", str(yml))
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "PyPI package six 1.16.0" in line and f"{SITE}/six.py" in line
    assert "conda package oldsix 1.0" in line and "take it from conda" in line
    envs = prefix_of(h, "clash").parent
    assert not os.path.lexists(prefix_of(h, "clash"))
    assert [p.name for p in envs.iterdir()] == []  # no half-built prefix left either
    assert snapshot(h["home"]) == home_before
    assert not list((h["storage"] / ".hpcenv").glob("pip-*"))  # the trial is gone too


def test_install_pip_that_overwrites_a_conda_file_is_refused_and_the_env_is_unchanged(h):
    ok(h, "create", "e", "python", "oldsix", *channel_args(h))
    prefix = prefix_of(h, "e")
    before = snapshot(prefix)
    r = run(h, "install", "e", "--pip", "-r", str(h["index_file"]), "six==1.16.0")
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "six 1.16.0" in line and "oldsix 1.0" in line
    assert "take it from conda: hpcenv install e six" in line
    assert snapshot(prefix) == before
    assert in_env(h, "e", "import six; print(six.__version__)") == "0.0.conda"


def test_pip_check_refuses_replacing_a_distribution_a_conda_package_installed(h):
    """conda's tqdm (built from the wheel) has a dist-info conda owns: a PyPI tqdm of another
    version would uninstall conda's files even where its own files do not overlap them."""
    ok(h, "create", "t", "python", "tqdm", "legacy-six", *channel_args(h))
    other = pypi.PypiPackage(
        "tqdm", "9.9", "file:///nowhere/tqdm-9.9-py3-none-any.whl", "0" * 64,
        files=(f"{SITE}/tqdm_elsewhere/__init__.py",),
    )  # fmt: skip
    with pytest.raises(RefusedError) as exc:
        pipstep.check(prefix_of(h, "t"), [other], "t", creating=False)
    message = exc.value.message
    assert f"{SITE}/tqdm-{TQDM[1]}.dist-info of conda package tqdm {TQDM[1]}" in message
    legacy = pypi.PypiPackage("Legacy.Six", "2.0", "file:///nowhere/l.whl", "0" * 64)
    with pytest.raises(RefusedError) as exc:
        pipstep.check(prefix_of(h, "t"), [legacy], "t", creating=False)
    egg = f"{SITE}/legacy_six-1.0-py{PYVER}.egg-info"
    assert f"{egg} of conda package legacy-six 1.0" in exc.value.message


# --------------------------------------------------------------------------- record, export, lock


def test_install_pip_records_name_version_url_hash_and_files_and_exports_them_pinned(h):
    ok(h, "create", "e", "python", *channel_args(h))
    r = ok(h, "install", "e", "--pip", "-r", str(h["index_file"]), "six")
    assert "PyPI +six 1.16.0" in r.stdout
    prefix = prefix_of(h, "e")
    six = h["wheels"]["six"]
    assert pypi_record(prefix) == {"six": ("1.16.0", six.as_uri(), sha256_of(six))}
    data = json.loads((prefix / "etc" / "hpcenv" / "pypi.json").read_text())
    files = data["packages"][0]["files"]
    assert f"{SITE}/six.py" in files and f"{SITE}/six-1.16.0.dist-info/RECORD" in files
    info = json.loads(ok(h, "info", "e", "--json").stdout)["result"]
    assert [(p["name"], p["version"], p["sha256"]) for p in info["pypi"]] == [
        ("six", "1.16.0", sha256_of(six))
    ]
    exported = ok(h, "export", "e").stdout
    assert exported.endswith(
        "- pip:\n" + "".join(f"  - {line}\n" for line in h["index"]) + "  - six==1.16.0\n"
    )
    assert world_writable(prefix) == []


def test_export_lock_then_create_reproduces_the_conda_and_the_pypi_packages(h):
    yml = env_yml(h, "mixed", ["python", "numpy"], ["six==1.16.0", "tqdm"])
    r = ok(h, "create", "-f", str(yml))
    assert "2 packages and 2 from PyPI" in r.stdout
    prefix = prefix_of(h, "mixed")
    lock = h["tmp"] / "mixed.lock"
    ok(h, "export", "mixed", "--lock", "-o", str(lock))
    assert [(n, v, s) for n, v, _loc, s in engine.read_lock_pypi(lock)] == [
        ("six", "1.16.0", sha256_of(h["wheels"]["six"])),
        ("tqdm", TQDM[1], sha256_of(h["wheels"]["tqdm"])),
    ]
    ok(h, "create", "copy", "-f", str(lock), UV_OFFLINE="1")
    copy = prefix_of(h, "copy")
    assert conda_records(copy) == conda_records(prefix)
    assert pypi_record(copy) == pypi_record(prefix)
    # the console script of a PyPI package names the env's python, not the build prefix
    named = h["home"] / ".conda" / "envs" / "copy"  # the prefix as hpcenv names it
    assert (copy / "bin" / "tqdm").read_text().splitlines()[0] == f"#!{named}/bin/python"
    assert ok(h, "run", "copy", "--", "tqdm", "--version").stdout.strip() == TQDM[1]
    # and through environment.yml: the same versions again
    again = h["tmp"] / "again.yml"
    again.write_text(ok(h, "export", "mixed").stdout.replace("name: mixed", "name: again"))
    ok(h, "create", "-f", str(again))
    assert conda_records(prefix_of(h, "again")) == conda_records(prefix)
    assert pypi_record(prefix_of(h, "again")) == pypi_record(prefix)


def test_create_from_a_lock_whose_pypi_hash_does_not_match_fails_and_makes_nothing(h):
    yml = env_yml(h, "m", ["python"], ["six==1.16.0"])
    ok(h, "create", "-f", str(yml))
    lock = h["tmp"] / "m.lock"
    ok(h, "export", "m", "--lock", "-o", str(lock))
    good = sha256_of(h["wheels"]["six"])
    lock.write_text(lock.read_text().replace(good, "0" * 64))
    r = run(h, "create", "bad", "-f", str(lock))
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "Hash mismatch for `six" in line and f"expected sha256:{'0' * 64}" in line
    assert f"got sha256:{good}" in line
    assert not os.path.lexists(prefix_of(h, "bad"))


# --------------------------------------------------------------------------- permissions, doctor


def test_doctor_reports_a_pip_installed_file_anyone_may_write(h):
    yml = env_yml(h, "p", ["python"], ["six==1.16.0"])
    ok(h, "create", "-f", str(yml))
    six_py = prefix_of(h, "p") / SITE / "six.py"
    r = run(h, "doctor", "--json")  # uv's cache too: uv makes its lock files 0666
    checks = {c["name"]: c for c in json.loads(r.stdout)["result"]["checks"]}
    assert checks["world-writable"]["status"] == "OK", checks["world-writable"]["detail"]
    os.chmod(six_py, 0o666)
    r = run(h, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)["result"]["checks"]}
    assert checks["world-writable"]["status"] == "FAIL"
    named = h["home"] / ".conda" / "envs" / "p" / SITE / "six.py"
    assert checks["world-writable"]["detail"].startswith(f"anyone can plant code in: {named}")


# --------------------------------------------------------------------------- pack and stage


def test_mixed_env_packs_and_stages_and_its_pypi_packages_work_there(h):
    yml = env_yml(h, "ms", ["python", "numpy"], ["six==1.16.0", "tqdm"])
    ok(h, "create", "-f", str(yml))
    target = h["tmp"] / "node-local" / "ms"
    env = {k: v for k, v in h["env"].items() if not k.startswith("SLURM_")}
    r = hpcenv("stage", "ms", "--to", str(target), env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    script = (
        f'. "{target}/etc/hpcenv/activate.sh"\n'
        'python -c "import sys, six, tqdm, numpy; print(sys.prefix, six.__file__)"\n'
        "tqdm --version\n"
    )
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(h["tmp"])},
    )
    assert out.returncode == 0, out.stderr
    first, version = out.stdout.splitlines()
    assert first == f"{target} {target}/lib/python{PYVER}/site-packages/six.py"
    assert version == TQDM[1]


# --------------------------------------------------------------------------- kills


@pytest.mark.parametrize("k", [1, 2, 3])
def test_install_pip_killed_at_any_step_is_finished_by_the_next_install(h, k):
    ok(h, "create", "e", "python", *channel_args(h))
    prefix = prefix_of(h, "e")
    args = ("install", "e", "--pip", "-r", str(h["index_file"]), "six==1.16.0")
    killed = run(h, *args, _HPCENV_TEST_KILL_AFTER=str(k))
    assert killed.returncode == -9, killed.stderr
    ok(h, "install", "e")  # repairs whatever the kill left
    assert not (prefix / "etc" / "hpcenv" / "pypi-pending.json").exists()
    assert pypi_record(prefix)["six"][0] == "1.16.0"
    assert in_env(h, "e", "import six; print(six.__version__)") == "1.16.0"
    assert world_writable(prefix) == []


# --------------------------------------------------------------------------- the parts


def test_requirement_names_are_read_from_lines_and_paths_and_options_have_none():
    assert pipstep.requirement_name("six==1.16.0") == "six"
    assert pipstep.requirement_name("Foo_Bar[extra] >=1; python_version>'3'") == "Foo_Bar"
    assert pipstep.requirement_name("six @ https://x/six-1.16.0-py2.py3-none-any.whl") == "six"
    for line in ("./pkg", "-e ./pkg", "--no-index", "https://x/y.whl", "six-1.0-py3-none-any.whl"):
        assert pipstep.requirement_name(line) is None


def test_requirements_file_lines_lose_comments_and_continuations(tmp_path):
    path = tmp_path / "req.txt"
    path.write_text(
        "# top\nsix==1.16.0  # pinned\n\ntqdm \\\n  >=4\nx @ https://h/x.whl#sha256=1\n"
    )
    assert pipstep.read_requirements(path) == [
        "six==1.16.0",
        "tqdm    >=4",
        "x @ https://h/x.whl#sha256=1",
    ]


def test_pylock_of_uv_reads_as_one_artifact_each_with_absolute_directories(tmp_path):
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "pylock.toml"
    path.write_text(
        'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.16.0"\n'
        'sdist = { url = "https://h/six-1.16.0.tar.gz", hashes = { sha256 = "aa" } }\n'
        'wheels = [{ url = "https://h/six-1.16.0-py3-none-any.whl", hashes = { sha256 = "bb" } },'
        ' { url = "https://h/six-1.16.0-py2-none-any.whl", hashes = { sha256 = "cc" } }]\n'
        '[[packages]]\nname = "mine"\ndirectory = { path = "../src/mine", editable = true }\n'
    )
    six, mine = pypi.read_pylock(path)
    assert (six.url, six.sha256, six.kind) == (
        "https://h/six-1.16.0-py3-none-any.whl",
        "bb",
        "wheel",
    )
    assert six.direct_reference == "six @ https://h/six-1.16.0-py3-none-any.whl --hash=sha256:bb"
    assert (mine.url, mine.editable, mine.sha256) == ((tmp_path / "src/mine").as_uri(), True, None)
    assert mine.requirement == mine.direct_reference == f"-e {tmp_path}/src/mine"
    assert not mine.lockable and six.lockable


def test_lock_keeps_pypi_hashes_also_of_local_files_and_all_digit_ones(tmp_path):
    """py-rattler 0.28 writes a PyPI entry's location only, and reads no hash back for a
    local file: hpcenv writes the `sha256:` itself, quoted (all digits would be an int)."""
    lock = tmp_path / "x.lock"
    local = (tmp_path / "w w" / "foo-1.0-py3-none-any.whl").as_uri()
    pins = [("foo", "1.0", local, "1" * 64), ("six", "1.16.0", "https://h/six.whl", "ab" * 32)]
    engine.write_lock([], [], lock, pypi=pins)
    read = engine.read_lock_pypi(lock)
    assert [(n, v, s) for n, v, _loc, s in read] == [(n, v, s) for n, v, _u, s in pins]
    assert [p.url for p in pypi.from_lock(lock)] == [local, "https://h/six.whl"]


# --------------------------------------------------------------------------- envs of others


def test_install_pip_into_a_plain_rattler_prefix_is_checked_recorded_and_exported(h):
    """An env hpcenv did not make (py-rattler's own install): the same check and record."""
    prefix = rattler_prefix(h["tmp"] / "plain", h["channels"], "python", "oldsix")
    r = run(h, "install", "-p", str(prefix), "--pip", "-r", str(h["index_file"]), "six")
    assert r.returncode == 2 and "conda package oldsix 1.0" in r.stderr, r.stderr
    ok(h, "install", "-p", str(prefix), "--pip", "-r", str(h["index_file"]), "tqdm")
    assert pypi_record(prefix)["tqdm"][2] == sha256_of(h["wheels"]["tqdm"])
    exported = ok(h, "export", "-p", str(prefix)).stdout
    assert f"  - tqdm=={TQDM[1]}\n" in exported and "\n- oldsix\n" in exported
    assert world_writable(prefix) == []


def test_another_user_gets_a_mixed_env_and_a_uv_cache_nobody_else_can_write(real_channel, wheels):
    need("root", IS_ROOT, "running as another user needs root")
    ensure_users()
    base = Path(tempfile.mkdtemp(prefix="hpcenv-pypi-user-"))
    try:
        base.chmod(0o755)
        channel = readable_copy(real_channel.path, base / "channel")
        found = readable_copy(wheels["six"].parent, base / "wheels")
        home, storage = base / "home", base / "storage"
        home.mkdir()
        storage.mkdir()
        chown_tree(home, "hpcalice")
        chown_tree(storage, "hpcalice")
        env = cli_env(home, storage)
        yml = base / "environment.yml"
        yml.write_text(
            f"name: mine\nchannels: [{channel.as_uri()}]\ndependencies:\n  - python\n"
            f"  - pip:\n    - --no-index\n    - --find-links {found}\n    - six==1.16.0\n"
        )
        yml.chmod(0o644)
        for args in (("setup", "--yes"), ("create", "-f", str(yml))):
            r = hpcenv_as("hpcalice", *args, env=env)
            assert r.returncode == 0, r.stderr
        prefix = storage / ".conda" / "envs" / "mine"
        assert pypi_record(prefix)["six"][0] == "1.16.0"
        assert world_writable(storage) == []  # the env and uv's cache (its lock files too)
        r = hpcenv_as("hpcalice", "run", "mine", "--", "python", "-c", "import six", env=env)
        assert r.returncode == 0, r.stderr
    finally:
        shutil.rmtree(base)


def test_pip_section_paths_are_relative_to_the_environment_yml(h):
    project = h["tmp"] / "project"
    (project / "wheels").mkdir(parents=True)
    shutil.copy(h["wheels"]["six"], project / "wheels")
    (project / "reqs.txt").write_text("--no-index\n--find-links ./wheels\n-r more/six.txt\n")
    (project / "more").mkdir()
    (project / "more" / "six.txt").write_text("six==1.16.0  # from a file the first one names\n")
    yml = project / "environment.yml"
    yml.write_text(
        f"name: rel\nchannels: [{h['channels'][0]}]\ndependencies:\n  - python\n"
        "  - pip:\n    - -r reqs.txt\n"
    )
    r = hpcenv("create", "-f", str(yml), env=h["env"], cwd="/", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    wheel = project / "wheels" / h["wheels"]["six"].name
    assert pypi_record(prefix_of(h, "rel"))["six"] == ("1.16.0", wheel.as_uri(), sha256_of(wheel))
    exported = ok(h, "export", "rel").stdout  # re-creates the env from anywhere
    assert exported.endswith(
        f"- pip:\n  - --no-index\n  - --find-links {project}/wheels\n  - six==1.16.0\n"
    )


def test_pypi_packages_installed_by_hand_are_exported_pinned_and_named_by_export_lock(h):
    ok(h, "create", "e", "python", *channel_args(h))
    prefix = prefix_of(h, "e")
    by_hand = subprocess.run(
        [pipstep.find_uv(), "pip", "install", "--python", str(prefix / "bin" / "python"),
         "--no-index", "--find-links", str(h["wheels"]["six"].parent), "six==1.16.0"],
        capture_output=True, text=True, env={**h["env"], "UV_CACHE_DIR": str(h["tmp"] / "uvc")},
    )  # fmt: skip
    assert by_hand.returncode == 0, by_hand.stderr
    assert "  - six==1.16.0\n" in ok(h, "export", "e").stdout
    r = ok(h, "export", "e", "--lock", "-o", str(h["tmp"] / "e.lock"))
    assert "not in the lock: PyPI package six 1.16.0 (not installed by hpcenv" in r.stderr
    assert engine.read_lock_pypi(h["tmp"] / "e.lock") == []
    info = json.loads(ok(h, "info", "e", "--json").stdout)["result"]
    assert [(p["name"], p["source"]) for p in info["pypi"]] == [("six", "unrecorded")]


def test_image_env_from_a_lock_installs_the_locked_pypi_artifacts(h, mount_root):
    """`create -f LOCK --image`: the PyPI part is the lock's (same URLs, same hashes, offline),
    not the requirements resolved again."""
    yml = env_yml(h, "mixed", ["python"], ["six==1.16.0", "tqdm"])
    ok(h, "create", "-f", str(yml))
    lock = h["tmp"] / "mixed.lock"
    ok(h, "export", "mixed", "--lock", "-o", str(lock))
    roots = {"HPCENV_IMAGES_MOUNT_ROOT": str(mount_root), "UV_OFFLINE": "1"}
    ok(h, "create", "img", "-f", str(lock), "--image", **roots)
    code = "import sys, six, tqdm; print(sys.prefix)"
    mount = Path(ok(h, "run", "img", "--", "python", "-c", code, **roots).stdout.strip())
    assert mount.is_relative_to(mount_root)
    assert pypi_record(mount) == pypi_record(prefix_of(h, "mixed"))
