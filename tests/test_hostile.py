"""The whole CLI over hostile inputs: each run is a real `python -m hpcenv` subprocess, and each
must end the way the error rules say: no traceback, exactly one line on stderr, exit 1 or 2,
and on exit 2 nothing changed in HOME or storage (a snapshot of both before and after).

The cases as another user (an env of hpcalice touched by hpcbob, a member of the group it is
shared with, and by hpccarol, who is not) run the CLI as those real users (tests/users.py).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests import users as real_users
from tests.conftest import IS_ROOT, need
from tests.fs import REPO, cli_env, hpcenv, hpcenv_ok, snapshot

FILES = {
    "dir.yml/": None,  # a directory
    "channels5.yml": "channels: 5\ndependencies: [demo-tool]\n",
    "namelist.yml": "name: [a, b]\ndependencies: [demo-tool]\n",
    "depstring.yml": "name: e2\ndependencies: python\n",
    "latin1.yml": b"name: caf\xe9\ndependencies: [demo-tool]\n",
    "notyaml.yml": "dependencies: [demo-tool\n",
    "toplist.yml": "- demo-tool\n- libnum\n",
    "pipstring.yml": "dependencies:\n  - python\n  - pip: requests\n",
    "nested.yml": "dependencies:\n  - [demo-tool]\n",
    "nulname.yml": 'name: "a\\0b"\ndependencies: [demo-tool]\n',
    "dotdot.yml": "name: ../x\ndependencies: [demo-tool]\n",
    "numbers.yml": "dependencies: [1, 2]\n",
    "huge.yml": "dependencies:\n" + "  - demo-tool  # padding\n" * 50_000,
    "many.yml": "dependencies:\n" + "".join(f"  - p{i}\n" for i in range(10_001)),
    "bad.lock": "version: 6\nenvironments: [\n",
    "nan.toml": "lock_timeout = nan\n",
    "inf.toml": "lock_timeout = inf\n",
    "negative.toml": "lock_timeout = -1\n",
    "nochannels.toml": "channels = []\n",
    "badtoml.toml": "channels = [\n",
    "latin1.toml": b'channel_alias = "caf\xe9"\n',
    "unknown.toml": "colour = 'blue'\n",
    "nulstorage.toml": 'storage = "/tmp/a\\u0000b"\n',
    "listtimeout.toml": "lock_timeout = [1]\n",
}

CONFIG_COMMANDS = ("list",)

# (id, arguments, extra environment, the exit code it must have or None for "1 or 2")
CASES: list[tuple[str, list[str], dict[str, str], int | None]] = [
    ("yml-directory", ["create", "e2", "-f", "{d}/dir.yml"], {}, 2),
    ("yml-channels-int", ["create", "e2", "-f", "{d}/channels5.yml"], {}, 2),
    ("yml-name-list", ["create", "-f", "{d}/namelist.yml"], {}, 2),
    ("yml-deps-string", ["create", "e2", "-f", "{d}/depstring.yml", "-c", "{url}"], {}, 2),
    ("yml-not-utf8", ["create", "e2", "-f", "{d}/latin1.yml"], {}, 2),
    ("yml-not-yaml", ["create", "e2", "-f", "{d}/notyaml.yml"], {}, 2),
    ("yml-top-list", ["create", "e2", "-f", "{d}/toplist.yml"], {}, 2),
    ("yml-pip-string", ["create", "e2", "-f", "{d}/pipstring.yml"], {}, 2),
    ("yml-nested-list", ["create", "e2", "-f", "{d}/nested.yml"], {}, 2),
    ("yml-nul-name", ["create", "-f", "{d}/nulname.yml", "-c", "{url}"], {}, 2),
    ("yml-dotdot-name", ["create", "-f", "{d}/dotdot.yml", "-c", "{url}"], {}, 2),
    ("yml-numbers", ["create", "e2", "-f", "{d}/numbers.yml"], {}, 2),
    ("yml-over-1mib", ["create", "e2", "-f", "{d}/huge.yml"], {}, 2),
    ("yml-too-many", ["create", "e2", "-f", "{d}/many.yml"], {}, 2),
    ("yml-missing", ["create", "e2", "-f", "{d}/missing.yml"], {}, 2),
    ("lock-broken", ["create", "e2", "-f", "{d}/bad.lock"], {}, 2),
    ("export-no-dir", ["export", "e1", "-o", "/no/such/dir/x.yml"], {}, 2),
    ("export-lock-no-dir", ["export", "e1", "--lock", "-o", "/no/such/dir/x.lock"], {}, 2),
    ("modulefile-proc", ["modulefile", "e1", "--to", "/proc/x"], {}, 2),
    ("export-dev-full", ["export", "e1", "-o", "/dev/full"], {}, 1),
    ("name-slash", ["create", "a/b", "demo-tool", "-c", "{url}"], {}, 2),
    ("name-dotdot", ["create", "..", "demo-tool", "-c", "{url}"], {}, 2),
    ("name-control", ["create", "a\x01b", "demo-tool", "-c", "{url}"], {}, 2),
    ("name-newline-activate", ["activate", "a\nb"], {}, 2),
    ("name-tab-remove", ["remove", "a\tb", "--yes"], {}, 2),
    ("name-dotdot-info", ["info", "../../etc"], {}, 2),
    ("name-unknown-run", ["run", "nope", "--", "true"], {}, 2),
    ("name-huge", ["create", "x" * 100_000, "demo-tool", "-c", "{url}"], {}, 2),
    ("spec-huge", ["install", "e1", "demo-tool" + ">=1" * 30_000], {}, 2),
    ("spec-open-bracket", ["create", "e2", "numpy[", "-c", "{url}"], {}, 2),
    ("spec-glob-name", ["create", "e2", "*", "-c", "{url}"], {}, 2),
    ("spec-not-installed", ["remove", "e1", "libnum"], {}, 2),
    ("channel-garbage", ["create", "e2", "demo-tool", "-c", "::::"], {}, None),
    ("cuda-banana", ["create", "e2", "demo-tool", "--cuda", "banana", "-c", "{url}"], {}, 2),
    ("flag-unknown", ["list", "--bogus"], {}, 2),
    ("flag-unknown-create", ["create", "e2", "--frobnicate"], {}, 2),
    ("time-word", ["jobscript", "e1", "--time", "soon", "--", "python"], {}, 2),
    ("time-negative", ["jobscript", "e1", "--time", "-5", "--", "python"], {}, 2),
    ("time-four-fields", ["jobscript", "e1", "--time", "1:2:3:4", "--", "python"], {}, 2),
    ("mem-word", ["jobscript", "e1", "--mem", "lots", "--", "python"], {}, 2),
    ("cpus-zero", ["jobscript", "e1", "--cpus", "0", "--", "python"], {}, 2),
    ("shell-unknown", ["activate", "e1", "--shell", "cmd.exe"], {}, 2),
    ("shell-empty", ["activate", "e1", "--shell", ""], {}, 2),
    ("config-nan", ["--config", "{d}/nan.toml", "list"], {}, 2),
    ("config-inf", ["--config", "{d}/inf.toml", "list"], {}, 2),
    ("config-negative", ["--config", "{d}/negative.toml", "list"], {}, 2),
    ("config-no-channels", ["--config", "{d}/nochannels.toml", "list"], {}, 2),
    ("config-bad-toml", ["--config", "{d}/badtoml.toml", "list"], {}, 2),
    ("config-not-utf8", ["--config", "{d}/latin1.toml", "list"], {}, 2),
    ("config-unknown-key", ["--config", "{d}/unknown.toml", "list"], {}, 2),
    ("config-nul-storage", ["--config", "{d}/nulstorage.toml", "list"], {}, 2),
    ("config-list-timeout", ["--config", "{d}/listtimeout.toml", "list"], {}, 2),
    ("config-missing", ["--config", "{d}/missing.toml", "list"], {}, 2),
    ("config-directory", ["--config", "{d}/dir.yml", "list"], {}, 2),
    ("site-config-nan", ["list"], {"HPCENV_SITE_CONFIG": "{d}/nan.toml"}, 2),
    ("env-timeout-nan", ["list"], {"HPCENV_LOCK_TIMEOUT": "nan"}, 2),
    ("env-timeout-word", ["list"], {"HPCENV_LOCK_TIMEOUT": "soon"}, 2),
    ("env-no-channels", ["list"], {"HPCENV_CHANNELS": ","}, 2),
    ("env-storage-missing", ["setup", "--yes"], {"HPCENV_STORAGE": "/no/such/storage"}, 2),
    ("env-storage-file", ["setup", "--yes"], {"HPCENV_STORAGE": "{d}/nan.toml"}, 2),
]


def _materialise(d: Path) -> None:
    for name, content in FILES.items():
        if content is None:
            (d / name.rstrip("/")).mkdir()
        elif isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            (d / name).write_text(content)


def assert_one_line_error(result: subprocess.CompletedProcess, what: str) -> None:
    err = result.stderr
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"{what}: {len(lines)} lines on stderr\n{err}"
    assert lines[0].startswith("hpcenv: error: "), f"{what}: {lines[0]}"
    assert result.returncode in (1, 2), f"{what}: exit {result.returncode}\n{err}"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, demo_channel):
    """HOME and storage after `hpcenv setup`, with one env `e1` (demo-tool), and the files."""
    base = tmp_path_factory.mktemp("hostile")
    home, storage, d = base / "home", base / "storage", base / "inputs"
    for p in (home, storage, d):
        p.mkdir()
    env = cli_env(home, storage)
    h = {"home": home, "storage": storage, "env": env, "url": demo_channel.url, "d": d}
    hpcenv_ok(h, "setup", "--yes")
    hpcenv_ok(h, "create", "e1", "demo-tool", "-c", demo_channel.url)
    _materialise(d)
    return h


@pytest.mark.parametrize(
    ("args", "extra", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_input_is_one_line_and_changes_nothing_on_exit_2(hostile, args, extra, code):
    fill = {"d": str(hostile["d"]), "url": hostile["url"]}
    argv = [a.format(**fill) if "{" in a else a for a in args]
    env = {**hostile["env"], **{k: v.format(**fill) for k, v in extra.items()}}
    before = snapshot(hostile["home"], hostile["storage"])
    result = hpcenv(*argv, env=env, stdin=subprocess.DEVNULL)
    assert_one_line_error(result, " ".join(a[:40] for a in argv))
    if code is not None:
        assert result.returncode == code, result.stderr
    if result.returncode == 2:
        assert snapshot(hostile["home"], hostile["storage"]) == before


def test_internal_error_is_one_line_and_the_traceback_comes_with_hpcenv_debug(hostile, tmp_path):
    """A bug (here: an exception no code expects, raised from a sitecustomize hook inside the
    real CLI) is one `internal error` line; HPCENV_DEBUG=1 adds the traceback."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import hpcenv.envs.info\n"
        "def boom(*a, **k):\n"
        "    raise LookupError('the registry went away')\n"
        "hpcenv.envs.info.list_envs = boom\n"
    )
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    env = {**hostile["env"], "PYTHONPATH": path}
    result = hpcenv("list", env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr == (
        "hpcenv: internal error: LookupError: the registry went away "
        "(set HPCENV_DEBUG=1 for the traceback)\n"
    )
    debug = hpcenv("list", env={**env, "HPCENV_DEBUG": "1"}, stdin=subprocess.DEVNULL)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "raise LookupError" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("hpcenv: internal error: LookupError")


def test_conda_env_export_lines_create_that_exact_version_and_build(hostile, tmp_path):
    exported = tmp_path / "exported.yml"
    exported.write_text(
        "name: exported\n"
        f"channels:\n  - {hostile['url']}\n"
        "dependencies:\n  - demo-tool=1.0=0\n  - libnum=1.0=0\n"
        "prefix: /somewhere/else/envs/exported\n"
    )
    hpcenv_ok(hostile, "create", "-f", str(exported))
    prefix = hostile["home"] / ".conda" / "envs" / "exported"
    records = sorted(p.name for p in (prefix / "conda-meta").glob("*.json"))
    assert records == ["demo-tool-1.0-0.json", "libnum-1.0-0.json"]
    wrong_build = tmp_path / "wrong.yml"
    wrong_build.write_text(f"channels:\n  - {hostile['url']}\ndependencies:\n  - libnum=1.0=1\n")
    result = hpcenv(
        "create", "nobuild", "-f", str(wrong_build), env=hostile["env"], stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2 and "libnum" in result.stderr


def test_bracket_spec_is_read_by_name_for_install_and_remove(hostile):
    """`libnum[version=">=2"]` (as `pytorch[version=">=2"]`): recorded, replaced and dropped by
    its package name, which rattler reads."""

    def state() -> tuple[list[str], dict[str, str]]:
        result = json.loads(hpcenv_ok(hostile, "info", "br", "--json").stdout)["result"]
        return result["specs"], {p["name"]: p["version"] for p in result["packages"]}

    hpcenv_ok(hostile, "create", "br", "demo-tool", "-c", hostile["url"])
    hpcenv_ok(hostile, "install", "br", 'libnum[version=">=2"]')
    assert state() == (
        ["demo-tool", 'libnum[version=">=2"]'],
        {"demo-tool": "1.0", "libnum": "2.0"},
    )
    hpcenv_ok(hostile, "install", "br", 'libnum[version="<2"]')
    assert state() == (["demo-tool", 'libnum[version="<2"]'], {"demo-tool": "1.0", "libnum": "1.0"})
    hpcenv_ok(hostile, "remove", "br", "libnum")
    assert state() == (["demo-tool"], {"demo-tool": "1.0"})


# ------------------------------------------------------------------ as other, real users


def hpcenv_as(user: str, home: Path, storage: Path, *args: str):
    """The real CLI as `user` (tests/users.py), with that user's HOME and storage."""
    env = cli_env(home, storage, PYTHONPATH=str(REPO / "src"))
    return real_users.hpcenv_as(user, *args, env=env, cwd="/")


@pytest.fixture(scope="module")
def lab(demo_channel):
    """Three real users: hpcalice owns env `proj`, shared read-only with group hpcenvlab, of
    which hpcbob is a member and hpccarol is not. Each has a HOME and a storage area."""
    need("root", IS_ROOT, "creating users and running commands as them needs root")
    need("setpriv", shutil.which("setpriv") is not None, "util-linux setpriv runs as a user")
    need("unshare", shutil.which("unshare") is not None, "util-linux unshare")
    real_users.ensure_users()
    base = Path(tempfile.mkdtemp(prefix="hpcenv-hostile-"))
    base.chmod(0o755)
    channel = real_users.readable_copy(demo_channel.path, base / "channel")
    users = {}
    for user in ("hpcalice", "hpcbob", "hpccarol"):
        entry = pwd.getpwnam(user)
        home, storage = base / user / "home", base / user / "storage"
        home.mkdir(parents=True)
        storage.mkdir()
        for p in (base / user, home, storage):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        (base / user).chmod(0o755)
        users[user] = (home, storage)
        setup = hpcenv_as(user, home, storage, "setup", "--yes")
        assert setup.returncode == 0, setup.stderr
    alice = users["hpcalice"]
    made = hpcenv_as(
        "hpcalice", *alice, "create", "proj", "demo-tool", "libnum", "-c", channel.as_uri()
    )
    assert made.returncode == 0, made.stderr
    shared = hpcenv_as("hpcalice", *alice, "share", "proj", "--group", "hpcenvlab")
    assert shared.returncode == 0, shared.stderr
    prefix = alice[1] / ".conda" / "envs" / "proj"
    assert grp.getgrgid(os.stat(prefix).st_gid).gr_name == "hpcenvlab"
    yield {
        "base": base,
        "users": users,
        "prefix": prefix,
        "url": channel.as_uri(),
    }
    shutil.rmtree(base)


OTHER_USER_CASES = [
    ("member-remove-env", "hpcbob", ["remove", "{prefix}", "--yes"]),
    ("member-remove-package", "hpcbob", ["remove", "{prefix}", "demo-tool"]),
    ("member-install", "hpcbob", ["install", "{prefix}", "libnum"]),
    ("member-export-lock-into-it", "hpcbob", ["export", "{prefix}", "--lock", "-o", "{prefix}/x"]),
    ("non-member-remove-env", "hpccarol", ["remove", "{prefix}", "--yes"]),
    ("non-member-install", "hpccarol", ["install", "{prefix}", "libnum"]),
    ("non-member-run", "hpccarol", ["run", "{prefix}", "--", "demo-tool"]),
    ("non-member-info", "hpccarol", ["info", "{prefix}"]),
    ("non-member-activate", "hpccarol", ["activate", "{prefix}"]),
    ("other-storage-setup", "hpcbob", ["setup", "--yes", "--storage", "{alice_storage}"]),
]


@pytest.mark.parametrize(
    ("user", "args"), [c[1:] for c in OTHER_USER_CASES], ids=[c[0] for c in OTHER_USER_CASES]
)
def test_another_users_env_is_a_one_line_refusal_that_changes_nothing(lab, user, args):
    fill = {"prefix": str(lab["prefix"]), "alice_storage": str(lab["users"]["hpcalice"][1])}
    argv = [a.format(**fill) for a in args]
    home, storage = lab["users"][user]
    alice_home, alice_storage = lab["users"]["hpcalice"]
    roots = (home, storage, alice_home, alice_storage)
    before = snapshot(*roots)
    result = hpcenv_as(user, home, storage, *argv)
    assert_one_line_error(result, f"{user} {' '.join(args)}")
    assert result.returncode == 2, result.stderr
    assert snapshot(*roots) == before
    if user == "hpcbob" and "{prefix}" in args[1]:
        assert "hpcalice" in result.stderr  # whose it is


def test_group_member_still_runs_the_shared_env(lab):
    """The refusals above are about changing it: running a shared env stays allowed."""
    home, storage = lab["users"]["hpcbob"]
    result = hpcenv_as("hpcbob", home, storage, "run", str(lab["prefix"]), "--", "demo-tool")
    assert result.returncode == 0, result.stderr


def test_storage_shared_by_a_group_is_refused_in_one_line(lab):
    """A group-writable project directory as storage root: the second user's setup and clean
    used to crash on the first user's journal; now both are refused before anything."""
    group_root = lab["base"] / "project"
    group_root.mkdir()
    os.chown(group_root, 0, grp.getgrnam("hpcenvlab").gr_gid)
    group_root.chmod(0o2770)
    alice_home = lab["base"] / "hpcalice" / "home2"
    bob_home = lab["base"] / "hpcbob" / "home2"
    for user, home in (("hpcalice", alice_home), ("hpcbob", bob_home)):
        home.mkdir()
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    for user, home in (("hpcalice", alice_home), ("hpcbob", bob_home)):
        for command in (["setup", "--yes"], ["clean", "--yes"]):
            before = snapshot(group_root, home)
            result = hpcenv_as(user, home, group_root, *command)
            assert_one_line_error(result, f"{user} {command[0]}")
            assert result.returncode == 2
            assert "shared area" in result.stderr and "$USER" in result.stderr
            assert snapshot(group_root, home) == before
