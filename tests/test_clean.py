"""`hpcenv clean` on real envs built from the demo channel, with real hardlinks, real pip/uv,
and fault injection into the clean executor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv import clean
from hpcenv.registry import is_env
from hpcenv.settings import load_settings
from hpcenv.storage import CACHE_TRASH, layout_from
from tests.channels import pkgs, prefix, result_of
from tests.conftest import IS_ROOT, need, run_as_user
from tests.fs import hpcenv_in as run
from tests.fs import hpcenv_ok as ok
from tests.fs import snapshot


def tool_runs(h, env: str, tool: str = "demo-tool") -> bool:
    out = subprocess.run([prefix(h, env) / "bin" / tool], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.startswith(f"{tool} 1.0")


def test_clean_frees_unused_cache_entries_and_both_envs_still_run(two_envs):
    h = two_envs
    report = result_of(ok(h, "clean", "--yes", "--json"))
    removed = {Path(i["path"]).name: i for i in report["items"] if i["status"] == "removed"}
    assert "libnum-2.0-0" in removed
    assert report["freed_bytes"] >= removed["libnum-2.0-0"]["bytes"] > 0
    assert not (pkgs(h) / "libnum-2.0-0").exists()
    assert not (pkgs(h) / "libnum-2.0-0.lock").exists()
    kept = {p.name for p in pkgs(h).iterdir() if p.is_dir()}
    assert {"demo-tool-1.0-0", "hello-2.0-0", "libnum-1.0-0", "numtool-1.0-0"} <= kept
    assert any(name.startswith("python-") for name in kept)
    assert tool_runs(h, "e1") and tool_runs(h, "e2")
    assert tool_runs(h, "e2", "numtool")
    assert not (h["storage"] / ".cache" / "rattler" / CACHE_TRASH).exists()
    # nothing left to do; the package comes back when an env asks for it again
    assert result_of(ok(h, "clean", "--dry-run", "--json"))["items"] == []
    ok(h, "create", "e3", "clash-a", "-c", h["url"])
    assert (prefix(h, "e3") / "lib" / "libnum.txt").read_text() == "libnum 2.0\n"


def test_clean_keeps_packages_that_an_env_links(two_envs):
    h = two_envs
    # an env hpcenv knows nothing about (not registered, not in ~/.conda/envs) that hardlinks
    # the cache, like a copy made with `cp -al`: its link counts keep its packages
    unknown = h["storage"] / "elsewhere"
    ok(h, "create", "e3", "libnum=2.0", "-c", h["url"])
    subprocess.run(["cp", "-al", str(prefix(h, "e3")), str(unknown)], check=True)
    ok(h, "remove", "e3", "--yes")
    plan = result_of(ok(h, "clean", "--dry-run", "--json"))
    assert "libnum-2.0-0" in plan["kept_packages"]
    assert not [i for i in plan["items"] if i["kind"] == "package"]
    known = set(plan["kept_packages"])
    assert {"demo-tool-1.0-0", "hello-2.0-0", "libnum-1.0-0", "numtool-1.0-0"} <= known
    ok(h, "clean", "--yes")
    assert (unknown / "lib" / "libnum.txt").read_text() == "libnum 2.0\n"
    assert (pkgs(h) / "libnum-2.0-0" / "lib" / "libnum.txt").exists()


def test_clean_keeps_a_package_an_env_started_using_after_the_plan(two_envs, monkeypatch):
    h = two_envs
    for key, value in h["env"].items():
        monkeypatch.setenv(key, value)
    layout = layout_from(load_settings())
    plan = clean.plan_clean(layout)
    assert [Path(i.path).name for i in plan.items if i.kind == "package"] == ["libnum-2.0-0"]
    ok(h, "create", "late", "clash-a", "-c", h["url"])  # links libnum 2.0 again
    report = clean.execute_clean(plan)
    [item] = [i for i in report.items if i.kind == "package"]
    assert item.describe_status() == "kept: in use now" and report.freed_bytes == 0
    assert (prefix(h, "late") / "lib" / "libnum.txt").read_text() == "libnum 2.0\n"
    assert (pkgs(h) / "libnum-2.0-0").is_dir()


def test_clean_dry_run_lists_what_goes_and_changes_nothing(two_envs):
    h = two_envs
    before = snapshot(h["home"], h["storage"])
    result = ok(h, "clean", "--dry-run")
    assert "libnum-2.0-0" in result.stdout and "dry run" in result.stdout
    assert snapshot(h["home"], h["storage"]) == before


def test_clean_without_a_terminal_or_yes_refuses_and_changes_nothing(two_envs):
    h = two_envs
    before = snapshot(h["home"], h["storage"])
    result = run(h, "clean")
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert snapshot(h["home"], h["storage"]) == before


def test_clean_removes_archives_pip_and_uv_caches_leftovers_and_stale_packs(two_envs):
    h = two_envs
    archive = pkgs(h) / "old-1.0-0.tar.bz2"
    archive.write_bytes(b"x" * 1000)
    conda_archive = h["home"] / ".conda" / "pkgs" / "numpy-1.26-0.conda"
    conda_archive.parent.mkdir()
    conda_archive.write_bytes(b"y" * 2000)
    conda_extracted = conda_archive.parent / "numpy-1.26-0" / "info"
    conda_extracted.mkdir(parents=True)
    pip_wheel = h["storage"] / ".cache" / "pip" / "wheels" / "ab" / "x-1.0-py3-none-any.whl"
    pip_wheel.parent.mkdir(parents=True)
    pip_wheel.write_bytes(b"w" * 3000)
    uv_file = h["storage"] / ".cache" / "uv" / "archive-v0" / "blob"
    uv_file.parent.mkdir(parents=True)
    uv_file.write_bytes(b"u" * 4000)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True).stdout.strip()  # fmt: skip
    leftover = h["home"] / ".conda" / "envs" / f".e9.hpcenv-tmp-{dead}"
    (leftover / "conda-meta").mkdir(parents=True)
    (leftover / "bin").mkdir()
    (leftover / "bin" / "tool").write_text("half-built\n")
    packs = h["storage"] / ".hpcenv" / "packs"
    packs.mkdir()
    gone_pack = packs / f"vanished-{'0' * 16}.tar.gz"
    changed_pack = packs / f"e1-{'f' * 16}.tar.gz"
    from hpcenv.jobs import pack_key

    current_pack = packs / f"e2-{pack_key(prefix(h, 'e2'))}.tar.gz"
    for p in (gone_pack, changed_pack, current_pack):
        p.write_bytes(b"p" * 500)
    # squeue is left off PATH: with jobs queued (or SLURM not answering), packs are kept
    path = os.path.dirname(sys.executable)
    report = result_of(ok(h, "clean", "--yes", "--json", PATH=path))
    by_kind = {}
    for item in report["items"]:
        assert item["status"] == "removed", item
        by_kind.setdefault(item["kind"], set()).add(item["path"])
    assert by_kind["archive"] == {str(archive), str(conda_archive)}
    assert by_kind["leftover"] == {str(leftover)}
    assert by_kind["pack"] == {str(gone_pack), str(changed_pack)}
    assert "pip-cache" in by_kind and "uv-cache" in by_kind
    for gone in (archive, conda_archive, pip_wheel, uv_file, leftover, gone_pack, changed_pack):
        assert not gone.exists(), gone
    assert current_pack.exists() and conda_extracted.is_dir()  # conda's own, not ours to judge
    assert report["freed_bytes"] >= 1000 + 2000 + 3000 + 4000 + 1000
    assert tool_runs(h, "e1") and tool_runs(h, "e2")


def test_clean_keeps_outdated_packs_while_jobs_may_stage_them(two_envs):
    h = two_envs
    packs = h["storage"] / ".hpcenv" / "packs"
    packs.mkdir()
    stale = packs / f"e1-{'f' * 16}.tar.gz"
    stale.write_bytes(b"p")
    bin_dir = h["root"] / "bin"
    bin_dir.mkdir()
    squeue = shutil.which("squeue")
    need("squeue", squeue is not None, "SLURM's client commands are not installed")
    os.symlink(squeue, bin_dir / "squeue")
    # a real squeue without a usable slurm.conf cannot tell: the packs stay
    conf = h["root"] / "slurm.conf"
    conf.write_text("")
    path = f"{bin_dir}:{os.path.dirname(sys.executable)}"
    result = run(h, "clean", "--yes", "--json", PATH=path, SLURM_CONF=str(conf))
    assert result.returncode == 0, result.stderr
    assert stale.exists()
    assert any("queue" in w for w in result_of(result)["warnings"])


@pytest.mark.slow
def test_clean_killed_after_any_step_loses_no_env_and_the_next_run_finishes(ready_home):
    h = ready_home
    ok(h, "create", "e1", "demo-tool", "numtool", "-c", h["url"])
    ok(h, "create", "gone", "libnum=2.0", "hello", "python", "-c", h["url"])
    ok(h, "remove", "gone", "--yes")
    unused = {i["path"] for i in result_of(ok(h, "clean", "--dry-run", "--json"))["items"]}
    assert len(unused) >= 3
    pristine = h["root"] / "pristine"
    pristine.mkdir()
    # `cp -a` keeps the hardlinks between the package cache and the env
    subprocess.run(["cp", "-a", str(h["storage"]), str(pristine)], check=True)
    journal = h["storage"] / ".hpcenv" / "journal" / "clean.jsonl"
    k = 0
    while True:
        k += 1
        shutil.rmtree(h["storage"])
        subprocess.run(["cp", "-a", str(pristine / "storage"), str(h["root"])], check=True)
        killed = run(h, "clean", "--yes", _HPCENV_TEST_KILL_AFTER=str(k))
        if killed.returncode == 0:
            break
        assert killed.returncode == -9, killed.stderr
        # what is in the cache is whole: every package dir has all its files
        for entry in pkgs(h).iterdir():
            if entry.is_dir():
                paths = json.loads((entry / "info" / "paths.json").read_text())["paths"]
                assert all(os.path.lexists(entry / p["_path"]) for p in paths), (k, entry)
        assert tool_runs(h, "e1") and tool_runs(h, "e1", "numtool")
        if journal.exists():
            doctor = result_of(run(h, "doctor", "--json"))
            flagged = {c["name"] for c in doctor["checks"] if c["status"] != "OK"}
            assert "interrupted" in flagged, (k, flagged)
        ok(h, "clean", "--yes")
        assert result_of(ok(h, "clean", "--dry-run", "--json"))["items"] == []
        assert not any(os.path.exists(p) for p in unused), k
        assert not journal.exists()
        assert tool_runs(h, "e1") and tool_runs(h, "e1", "numtool")
        # a package removed mid-way comes back whole when asked for
        ok(h, "create", "again", "libnum=2.0", "hello", "python", "-c", h["url"])
        assert (prefix(h, "again") / "lib" / "libnum.txt").read_text() == "libnum 2.0\n"
        assert k < 50
    assert k > 3


def _is_env_as_user(paths: list[Path]) -> list[bool | None]:
    return [is_env(p) for p in paths]


def _packages_in_use_as_user(prefixes: list[Path]) -> list[str]:
    return clean.plan.packages_in_use(prefixes)[2]


@pytest.mark.root("needs root to act as another user (nobody)")
def test_an_env_another_user_hides_is_unreadable_not_gone():
    """A registered env whose parent the caller cannot enter is "cannot read", never "gone":
    clean must not count it as deleted (and drop its packages) just because stat failed."""
    import tempfile

    tmp_path = Path(
        tempfile.mkdtemp(prefix="hpcenv-hidden-")
    )  # pytest's tmp dirs are 0700; /tmp is not
    tmp_path.chmod(0o755)
    try:
        hidden = tmp_path / "hidden"
        (hidden / "env" / "conda-meta").mkdir(parents=True)
        hidden.chmod(0o700)  # root's: nobody cannot look inside
        visible = tmp_path / "visible"
        (visible / "env" / "conda-meta").mkdir(parents=True)
        (visible / "gone").mkdir()

        states = run_as_user(
            "nobody", _is_env_as_user, [hidden / "env", visible / "env", visible / "gone"]
        )
        assert states == [None, True, False]
        unreadable = run_as_user("nobody", _packages_in_use_as_user, [hidden / "env"])
        assert unreadable == [str(hidden / "env" / "conda-meta")]
    finally:
        shutil.rmtree(tmp_path)


def _clean_as_user(home: Path, storage: Path) -> clean.CleanReport:
    from hpcenv.storage import Layout

    layout = Layout(home=home, root=storage)
    return clean.execute_clean(clean.plan_clean(layout))


def test_clean_reports_as_removed_only_what_is_gone_and_counts_only_bytes_freed():
    """A package holding a directory its user may not empty (root's, as a package of a
    shared install could be): clean removes what it can, reports the package as failed with
    what is left, counts only the bytes really freed, and the next clean finds the rest."""
    need("root", IS_ROOT, "a directory the user cannot empty needs another owner")
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="hpcenv-clean-"))
    base.chmod(0o755)
    try:
        home, storage = base / "home", base / "storage"
        pkgs_dir = storage / ".cache" / "rattler" / "pkgs"
        stuck = pkgs_dir / "stuck-1.0-0"
        free = pkgs_dir / "free-1.0-0"
        for pkg in (stuck, free):
            (pkg / "info").mkdir(parents=True)
            (pkg / "info" / "index.json").write_text("{}")
            (pkg / "data.bin").write_bytes(b"d" * 10_000)
        home.mkdir()
        for dirpath, _dirs, files in os.walk(base):
            for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                os.lchown(p, nobody.pw_uid, nobody.pw_gid)
        locked = stuck / "locked"  # root's: nobody cannot unlink what is in it
        locked.mkdir()
        (locked / "keep.bin").write_bytes(b"k" * 30_000)

        report = run_as_user("nobody", _clean_as_user, home, storage)

        items = {Path(i.path).name: i for i in report.items}
        assert items["free-1.0-0"].status == clean.CleanStatus.REMOVED
        assert items["free-1.0-0"].bytes >= 10_000
        failed = items["stuck-1.0-0"]
        assert failed.status == clean.CleanStatus.FAILED
        assert "Permission denied" in failed.detail and "keep.bin" in failed.detail
        assert 10_000 <= failed.bytes < 30_000  # its data.bin went, keep.bin did not
        assert report.freed_bytes == items["free-1.0-0"].bytes + failed.bytes
        assert not free.exists() and not stuck.exists()  # both gone from the cache
        [left] = list((storage / ".cache" / "rattler" / CACHE_TRASH).glob("stuck-1.0-0-*"))
        assert (left / "locked" / "keep.bin").read_bytes() == b"k" * 30_000
        again = run_as_user("nobody", _clean_as_user, home, storage)
        [trash] = [i for i in again.items if i.kind == clean.CleanKind.TRASH]
        assert trash.status == clean.CleanStatus.FAILED and trash.bytes == 0
    finally:
        shutil.rmtree(base)
