"""Shared group environments and the trust check, with real Unix users and groups (root only).

hpcalice and hpcbob are in group hpcenvlab, hpccarol is not; hpcdave has a user private
group. The `lab` tests run the real CLI as each of them (tests/users.py), on envs alice
creates from the demo channel, whose files are hardlinks of her package cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcenv import sharedroot, sharing, trust
from hpcenv.errors import RefusedError
from tests.conftest import IS_ROOT, need, run_as_user
from tests.fs import cli_env, snapshot
from tests.users import LAB, chown_tree, ensure_users, hpcenv_as, readable_copy


@pytest.fixture(scope="module")
def users():
    need("root", IS_ROOT, "creating users hpcalice, hpcbob, hpccarol, hpcdave needs root")
    ensure_users()
    return "hpcalice", "hpcbob", "hpccarol"


# ----------------------------------------------------------------- a hand-made env, in-process


@pytest.fixture
def world(users):
    """alice's storage with one env; a shared root the site owns (sticky, like /tmp)."""
    base = Path(tempfile.mkdtemp(prefix="hpcenv-share-"))
    base.chmod(0o755)
    storage = base / "alice-storage"
    prefix = storage / ".conda" / "envs" / "proj"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "conda-meta").mkdir()
    (prefix / "etc" / "hpcenv").mkdir(parents=True)
    tool = prefix / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool-ran\n")
    tool.chmod(0o755)
    (prefix / "conda-meta" / "history").write_text("")
    chown_tree(storage, "hpcalice")
    storage.chmod(0o700)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    yield {"prefix": prefix, "shared": shared, "storage": storage, "base": base}
    shutil.rmtree(base)


def _share(world, **kw):
    return run_as_user(
        "hpcalice", sharing.share, world["prefix"], "proj", LAB, shared_root=world["shared"], **kw
    )


def _run_tool(prefix: Path) -> str:
    import subprocess

    return subprocess.run(
        [str(prefix / "bin" / "tool")], capture_output=True, text=True, check=True
    ).stdout


def _can_write(prefix: Path) -> bool:
    try:
        (prefix / "bin" / "planted").write_text("x")
    except PermissionError:
        return False
    return True


def _can_list(prefix: Path) -> bool:
    try:
        os.listdir(prefix)
    except PermissionError:
        return False
    return True


def test_group_member_runs_a_shared_env_but_cannot_change_it(world):
    prefix = world["prefix"]
    report = _share(world)
    assert report.entry and Path(report.entry).is_file()
    assert run_as_user("hpcbob", _run_tool, prefix) == "tool-ran\n"
    assert run_as_user("hpcbob", _can_write, prefix) is False
    assert run_as_user("hpcbob", trust.check_trusted, prefix).group == LAB
    st = os.stat(prefix / "bin")
    assert st.st_mode & 0o002 == 0 and st.st_mode & 0o2000  # never world-writable; setgid


def test_non_member_cannot_read_a_shared_env(world):
    _share(world)
    assert run_as_user("hpccarol", _can_list, world["prefix"]) is False


def test_shared_env_is_listed_for_members_only(world):
    _share(world)
    bob_sees = run_as_user("hpcbob", sharedroot.shared_envs, world["shared"])
    carol_sees = run_as_user("hpccarol", sharedroot.shared_envs, world["shared"])
    assert [(e.name, e.owner, e.group) for e in bob_sees.envs] == [("proj", "hpcalice", LAB)]
    assert bob_sees.warnings == ()
    assert carol_sees.envs == ()


def test_world_writable_env_of_another_user_is_refused(world):
    prefix = world["prefix"]
    _share(world)
    (prefix / "bin").chmod(0o2777)
    with pytest.raises(RefusedError, match="world-writable"):
        run_as_user("hpcbob", trust.check_trusted, prefix)


def test_world_writable_target_of_a_symlinked_bin_is_refused(world):
    prefix = world["prefix"]
    _share(world)
    elsewhere = world["base"] / "open-bin"
    elsewhere.mkdir()
    elsewhere.chmod(0o777)
    shutil.rmtree(prefix / "bin")
    os.symlink(elsewhere, prefix / "bin")
    with pytest.raises(RefusedError, match="world-writable"):
        run_as_user("hpcalice", trust.check_trusted, prefix)


def test_group_writable_env_is_refused_unless_shared_group_writable(world):
    prefix = world["prefix"]
    _share(world)
    (prefix / "bin").chmod(0o2775)
    with pytest.raises(RefusedError, match="group-writable"):
        run_as_user("hpcbob", trust.check_trusted, prefix)
    _share(world, group_writable=True)
    run_as_user("hpcbob", trust.check_trusted, prefix)
    assert run_as_user("hpcbob", _can_write, prefix) is True


def test_own_env_with_a_group_writable_file_is_refused_to_its_owner(world):
    prefix = world["prefix"]
    os.chown(prefix / "bin" / "tool", -1, _gid(LAB))
    (prefix / "bin" / "tool").chmod(0o775)
    with pytest.raises(RefusedError, match="group-writable"):
        run_as_user("hpcalice", trust.check_trusted, prefix)


def test_group_writable_in_the_owners_private_group_is_trusted(world):
    prefix = world["prefix"]
    chown_tree(world["storage"], "hpcdave")
    for p in (prefix / "bin", prefix / "bin" / "tool"):
        p.chmod(0o775)  # umask 002 on a system with user private groups
    assert run_as_user("hpcdave", trust.check_trusted, prefix) is None


def test_group_writable_file_hardlinked_elsewhere_is_refused_even_when_shared_writable(world):
    prefix = world["prefix"]
    _share(world, group_writable=True)
    os.link(prefix / "bin" / "tool", world["storage"] / "private-copy-of-tool")
    for user in ("hpcalice", "hpcbob"):
        with pytest.raises(RefusedError, match="hardlinked elsewhere"):
            run_as_user(user, trust.check_trusted, prefix)


def test_a_members_own_file_in_a_writable_share_is_trusted_only_in_the_group(world):
    prefix = world["prefix"]
    _share(world, group_writable=True)

    def plant(mode_group: str | None) -> None:
        path = prefix / "bin" / "bobs-tool"
        path.write_text("#!/bin/sh\n")
        if mode_group is not None:
            os.chown(path, -1, _gid(mode_group))

    run_as_user("hpcbob", plant, None)  # setgid bin: it lands in the group
    run_as_user("hpcalice", trust.check_trusted, prefix)
    run_as_user("hpcbob", plant, "users")  # bob moves it out of the group
    with pytest.raises(RefusedError, match="owned by hpcbob"):
        run_as_user("hpcalice", trust.check_trusted, prefix)


def test_sharing_with_a_group_you_are_not_in_is_refused(world):
    with pytest.raises(RefusedError, match="not a member"):
        run_as_user("hpccarol", sharing.share, world["prefix"], "proj", LAB)


def test_an_entry_squatted_by_someone_else_refuses_the_share_before_any_change(world):
    def squat() -> None:
        (world["shared"] / "hpcalice--proj.json").write_text("{}")

    run_as_user("hpccarol", squat)
    before = snapshot(world["prefix"])
    with pytest.raises(RefusedError, match="belongs to hpccarol"):
        _share(world)
    assert snapshot(world["prefix"]) == before


def _gid(group: str) -> int:
    import grp

    return grp.getgrnam(group).gr_gid


# ----------------------------------------------------------------- the real CLI, as real users


@dataclass
class Lab:
    base: Path
    shared: Path
    env: dict  # user -> environment variables
    url: str

    def home(self, user: str) -> Path:
        return self.base / user / "home"

    def prefix(self, name: str, user: str = "hpcalice") -> Path:
        return self.home(user) / ".conda" / "envs" / name

    @property
    def cache(self) -> Path:
        return self.base / "hpcalice" / "storage" / ".cache" / "rattler" / "pkgs"

    def run(self, user: str, *args: str, **extra: str):
        return hpcenv_as(user, *args, env={**self.env[user], **extra})

    def ok(self, user: str, *args: str, **extra: str):
        result = self.run(user, *args, **extra)
        assert result.returncode == 0, (args, result.stderr)
        return result


@pytest.fixture
def lab(users, demo_channel):
    """alice (set up), bob and carol, each with a 0700 home and storage; a sticky shared root
    in the site config; the demo channel where everyone can read it."""
    base = Path(tempfile.mkdtemp(prefix="hpcenv-lab-"))
    base.chmod(0o755)
    channel = readable_copy(demo_channel.path, base / "channel")
    shared = base / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    site = base / "site.toml"
    site.write_text(f'shared_root = "{shared}"\n')
    site.chmod(0o644)
    env = {}
    for user in ("hpcalice", "hpcbob", "hpccarol"):
        home, storage = base / user / "home", base / user / "storage"
        home.mkdir(parents=True)
        storage.mkdir()
        chown_tree(base / user, user)
        os.chown(base / user, 0, 0)
        home.chmod(0o700)
        storage.chmod(0o700)
        env[user] = cli_env(home, storage, HPCENV_SITE_CONFIG=str(site))
    lab = Lab(base, shared, env, channel.as_uri())
    lab.ok("hpcalice", "setup", "--yes")
    yield lab
    shutil.rmtree(base)


def _digests(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, root)] = (
                        hashlib.sha256(fh.read()).hexdigest(),
                        stat.S_IMODE(st.st_mode),
                    )
    return out


def _regular_files(root: Path, paths: bool = False) -> list:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out.append((path, st) if paths else st)
    return out


def test_member_edit_of_a_writable_share_never_reaches_the_owners_private_env_or_the_cache(lab):
    lab.ok("hpcalice", "create", "private", "demo-tool", "-c", lab.url)
    lab.ok("hpcalice", "create", "team", "demo-tool", "-c", lab.url)
    team, private = lab.prefix("team"), lab.prefix("private")
    assert os.stat(team / "bin" / "demo-tool").st_nlink > 1  # linked from the cache
    cache_before, private_before = _digests(lab.cache), _digests(private)
    lab.ok("hpcalice", "share", "team", "--group", LAB, "--group-writable")
    # the member appends to the shared copy
    r = lab.run("hpcbob", "run", str(team), "--", "sh", "-c", "echo 'echo PLANTED' >> \"$0\"",
                str(team / "bin" / "demo-tool"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "PLANTED" in (team / "bin" / "demo-tool").read_text()
    assert _digests(lab.cache) == cache_before
    assert _digests(private) == private_before
    out = lab.ok("hpcalice", "run", "private", "--", "demo-tool").stdout
    assert "demo-tool 1.0" in out and "PLANTED" not in out
    # a group-writable share is copied out of the cache entirely
    assert all(st.st_nlink == 1 for st in _regular_files(team))


def test_read_only_and_writable_shares_of_envs_with_shared_packages_stay_usable(lab):
    for name in ("ro", "rw"):
        lab.ok("hpcalice", "create", name, "demo-tool", "python", "-c", lab.url)
    cache_before = snapshot(lab.cache)
    lab.ok("hpcalice", "share", "ro", "--group", LAB)
    lab.ok("hpcalice", "share", "rw", "--group", LAB, "--group-writable")
    assert snapshot(lab.cache) == cache_before
    # the read-only share needed no mode change on the packages' files: still links
    assert os.stat(lab.prefix("ro") / "bin" / "demo-tool").st_nlink > 1
    for name in ("ro", "rw"):
        prefix = str(lab.prefix(name))
        for user in ("hpcbob", "hpcalice"):
            out = lab.ok(user, "run", prefix, "--", "demo-tool").stdout
            assert f"prefix: {prefix}" in out
        assert lab.ok("hpcbob", "activate", prefix, "--shell", "bash").stdout
        carol = lab.run("hpccarol", "run", prefix, "--", "demo-tool")
        assert carol.returncode == 2 and "demo-tool 1.0" not in carol.stdout


def test_installing_into_a_shared_env_keeps_the_group_bits_and_the_trust(lab):
    lab.ok("hpcalice", "create", "rw", "demo-tool", "-c", lab.url)
    lab.ok("hpcalice", "share", "rw", "--group", LAB, "--group-writable")
    tool = lab.prefix("rw") / "bin" / "demo-tool"
    lab.ok("hpcalice", "install", "rw", "numtool")  # the umask walk runs after it
    assert stat.S_IMODE(os.stat(tool).st_mode) & 0o070 == 0o070  # still group rwx
    assert "numtool 1.0" in lab.ok("hpcbob", "run", str(lab.prefix("rw")), "--", "numtool").stdout


def test_spoofed_share_entries_are_ignored_with_a_warning(lab):
    lab.ok("hpcalice", "create", "proj", "demo-tool", "-c", lab.url)
    lab.ok("hpcalice", "share", "proj", "--group", LAB)
    proj = str(lab.prefix("proj"))
    spoofs = {
        # carol writes an entry in alice's name
        "hpcalice--fake.json": {"owner": "hpcalice", "prefix": proj},
        # carol claims alice's env as her own
        "hpccarol--stolen.json": {"owner": "hpccarol", "prefix": proj},
    }
    for file, data in spoofs.items():
        record = {"name": file.split("--")[1][:-5], "group": LAB, "group_writable": True, **data}
        path = lab.shared / file
        path.write_text(json.dumps(record))
        os.chown(path, _uid("hpccarol"), -1)
    listing = lab.ok("hpcbob", "list", "--json")
    rows = json.loads(listing.stdout)["result"]
    assert [(r["name"], r["owner"]) for r in rows] == [("proj", f"hpcalice (group {LAB})")]
    warnings = listing.stderr.splitlines()
    assert sum("hpcalice--fake.json" in w for w in warnings) == 1
    assert sum("hpccarol--stolen.json" in w and "belongs to hpcalice" in w for w in warnings) == 1


def test_a_shared_env_that_is_gone_is_listed_as_missing(lab):
    lab.ok("hpcalice", "create", "gone", "demo-tool", "-c", lab.url)
    lab.ok("hpcalice", "share", "gone", "--group", LAB)
    lab.ok("hpcalice", "remove", "gone", "--yes")
    rows = json.loads(lab.ok("hpcbob", "list", "--json").stdout)["result"]
    assert [(r["name"], r["exists"]) for r in rows] == [("gone", False)]
    assert "missing" in lab.ok("hpcbob", "list", COLUMNS="300").stdout


@pytest.mark.parametrize(
    "command",
    [
        ("modulefile", "{prefix}", "--to", "{out}"),
        ("pack", "{prefix}", "-o", "{out}/p.tar.gz"),
        ("stage", "{prefix}", "--to", "{out}/staged"),
        ("activate", "{prefix}"),
        ("run", "{prefix}", "--", "demo-tool"),
        ("jobscript", "{prefix}", "--", "demo-tool"),
        ("submit", "{prefix}", "--", "demo-tool"),
        ("kernel", "{prefix}"),  # before the ipykernel check: nothing is written
    ],
    ids=lambda c: c[0],
)
def test_commands_that_run_or_expose_an_env_refuse_an_untrusted_one(lab, command):
    lab.ok("hpcalice", "create", "proj", "demo-tool", "-c", lab.url)
    lab.ok("hpcalice", "share", "proj", "--group", LAB)
    prefix = lab.prefix("proj")
    (prefix / "bin").chmod(0o2777)  # anyone may plant a tool in it now
    out = lab.base / "hpcbob" / "out"
    out.mkdir()
    chown_tree(out, "hpcbob")
    args = [a.format(prefix=prefix, out=out) for a in command]
    for user in ("hpcbob", "hpcalice"):
        r = lab.run(user, *args)
        assert r.returncode == 2, (user, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "world-writable" in r.stderr
        # activate prints `false` so that the eval fails; the others print nothing
        assert r.stdout == ("false\n" if args[0] == "activate" else "")
    assert list(out.iterdir()) == []


def _share_killed_after(k: int, lab: Lab, name: str) -> int:
    """`sharing.share` as alice in a forked child that SIGKILLs itself after its k-th step
    (journal.tick); returns the child's wait status. No engine runs in it, so forking is safe."""
    import ctypes  # noqa: F401 - for perms.syncfs: the child cannot read pyenv's stdlib
    import grp
    import pwd

    from hpcenv import journal

    alice = pwd.getpwnam("hpcalice")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups(os.getgrouplist("hpcalice", alice.pw_gid))
            os.setgid(alice.pw_gid)
            os.setuid(alice.pw_uid)
            os.environ["_HPCENV_TEST_KILL_AFTER"] = str(k)
            journal._ticks, journal._hooks = 0, None
            sharing.share(
                lab.prefix(name),
                name,
                grp.getgrgid(_gid(LAB)).gr_name,
                group_writable=True,
                shared_root=lab.shared,
                lock_path=lab.base / "hpcalice" / "storage" / ".hpcenv" / "lock",
            )
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def test_share_interrupted_anywhere_leaves_cache_and_other_envs_intact_and_a_rerun_finishes(lab):
    lab.ok("hpcalice", "create", "private", "demo-tool", "python", "-c", lab.url)
    lab.ok("hpcalice", "create", "team", "demo-tool", "python", "-c", lab.url)
    team = lab.prefix("team")
    before = snapshot(lab.cache, lab.prefix("private"))
    team_files = {k: v[0] for k, v in _digests(team).items()}
    killed = 0
    for k in range(1, 500):
        status = _share_killed_after(k, lab, "team")
        assert snapshot(lab.cache, lab.prefix("private")) == before, k
        now = {k: v[0] for k, v in _digests(team).items() if not _added_by_share(k)}
        assert now == team_files, k  # every path still there with its content
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0
            break
        assert os.WTERMSIG(status) == 9
        killed += 1
        if k % 8 == 0:  # usable in between, or refused with a hint to re-run, never half-trusted
            used = lab.run("hpcbob", "run", str(team), "--", "demo-tool")
            assert used.returncode == 0 or (used.returncode == 2 and "share" in used.stderr)
    assert killed > 20, killed
    report = json.loads(
        lab.ok("hpcalice", "share", "team", "--group", LAB, "--group-writable", "--json").stdout
    )
    assert report["result"]["copied"] == 0 and report["result"]["changed"] == 0  # all done
    leftovers = [p for p in _all_names(team) if ".hpcenv-copy-" in p]
    assert leftovers == []
    files = [st for p, st in _regular_files(team, paths=True) if not p.endswith("share.json")]
    assert all(st.st_nlink == 1 and (st.st_mode >> 3) & 7 == (st.st_mode >> 6) & 7 for st in files)
    assert "demo-tool 1.0" in lab.ok("hpcbob", "run", str(team), "--", "demo-tool").stdout


def test_share_command_registers_the_env_for_hpcenv_list(ready_home, users, tmp_path):
    from tests.fs import hpcenv

    h = ready_home
    shared = tmp_path / "shared"
    shared.mkdir()
    site_conf = Path(h["env"]["HPCENV_SITE_CONFIG"])
    site_conf.write_text(f'shared_root = "{shared}"\n')
    env = h["env"]
    assert hpcenv("create", "labenv", "demo-tool", "-c", h["url"], env=env).returncode == 0
    r = hpcenv("share", "labenv", "--group", LAB, "--json", env=env)
    assert r.returncode == 0, r.stderr
    entry = Path(json.loads(r.stdout)["result"]["entry"])
    assert json.loads(entry.read_text())["group"] == LAB
    prefix = h["home"] / ".conda/envs/labenv"
    assert os.stat(prefix / "bin").st_mode & 0o7777 == 0o2750
    bad = hpcenv("share", "labenv", "--group", "no-such-group-xyz", env=env)
    assert bad.returncode == 2 and "no such group" in bad.stderr


def _added_by_share(path: str) -> bool:
    return ".hpcenv-copy-" in path or "share.json" in path


def _all_names(root: Path) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files]


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
