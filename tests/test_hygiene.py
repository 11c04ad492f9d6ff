"""`hpcenv usage` and `hpcenv clean` on real envs built from the demo channel, with real
hardlinks, real pip/uv, and fault injection into the clean executor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcenv import hygiene
from hpcenv.settings import load_settings
from hpcenv.storage import layout_from
from tests.conftest import IS_ROOT, need, run_as_user
from tests.fs import hpcenv_in as run
from tests.fs import hpcenv_ok as ok
from tests.fs import snapshot

# `quota -s` output as quota-tools prints it (quota.c: heading() and showquotas() formats,
# space2str/number2str units): a local disk under quota; an NFS home whose long device name
# wraps the numbers onto the next line, over its soft limit in grace, followed by a group
# section; no limits at all; plain `quota` (1 KiB blocks, no units); a hard limit reached
# with no grace time set (a `*` and an empty grace column).
QUOTA_LOCAL = (
    "Disk quotas for user alice (uid 1001): \n"
    "     Filesystem   space   quota   limit   grace   files   quota   limit   grace\n"
    "      /dev/sda2   4301M  10240M  11264M            102k    200k    250k        \n"
)
QUOTA_NFS_WRAPPED = (
    "Disk quotas for user bob (uid 1002): \n"
    "     Filesystem   space   quota   limit   grace   files   quota   limit   grace\n"
    "nfs01.cluster.example:/export/home\n"
    "                 10300M* 10240M  11264M   6days    5210       0       0        \n"
    "/dev/mapper/vg-scratch\n"
    "                    28K       0       0               7       0       0        \n"
    "Disk quotas for group users (gid 100): \n"
    "     Filesystem   space   quota   limit   grace   files   quota   limit   grace\n"
    "      /dev/sda2    900G   1000G   1100G           1000k       0       0        \n"
)
QUOTA_NONE = "Disk quotas for user carol (uid 1003): none\n"
QUOTA_BLOCKS = (
    "Disk quotas for user dave (uid 1004): \n"
    "     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n"
    "      /dev/sdb1 4404224  10485760 11534336           51234  100000  110000        \n"
)
QUOTA_HARD_NO_GRACE = (
    "Disk quotas for user erin (uid 1005): \n"
    "     Filesystem   space   quota   limit   grace   files   quota   limit   grace\n"
    "      /dev/sda2  11264M* 10240M  11264M            200k*   200k    250k    none\n"
)
MiB, GiB = 1024**2, 1024**3


def result_of(completed: subprocess.CompletedProcess) -> dict:
    return json.loads(completed.stdout)["result"]


def pkgs(h) -> Path:
    return h["storage"] / ".cache" / "rattler" / "pkgs"


def prefix(h, name: str) -> Path:
    return h["home"] / ".conda" / "envs" / name


def tool_runs(h, env: str, tool: str = "demo-tool") -> bool:
    out = subprocess.run([prefix(h, env) / "bin" / tool], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.startswith(f"{tool} 1.0")


@pytest.fixture
def two_envs(ready_home):
    """e1 and e2 share demo-tool; libnum 2.0 was installed into e1 and removed again, so its
    extracted package is in the cache with nothing linking it."""
    h = ready_home
    ok(h, "create", "e1", "demo-tool", "hello", "python", "-c", h["url"])
    ok(h, "create", "e2", "demo-tool", "numtool", "-c", h["url"])
    ok(h, "install", "e1", "libnum=2.0")
    ok(h, "remove", "e1", "libnum")
    assert (pkgs(h) / "libnum-2.0-0").is_dir()
    return h


# ----------------------------------------------------------------------------------- quota


def test_quota_output_of_a_local_disk_gives_space_and_files_with_their_limits():
    [line] = hygiene.parse_quota(QUOTA_LOCAL)
    assert line.filesystem == "/dev/sda2"
    assert (line.used_bytes, line.soft_bytes, line.hard_bytes) == (4301 * MiB, 10 * GiB, 11 * GiB)
    assert (line.files, line.files_soft, line.files_hard) == (102_000, 200_000, 250_000)
    assert line.space_grace is None and line.files_grace is None


def test_quota_output_with_wrapped_device_names_keeps_each_user_filesystem_only():
    home, scratch = hygiene.parse_quota(QUOTA_NFS_WRAPPED)
    assert home.filesystem == "nfs01.cluster.example:/export/home"
    assert home.used_bytes == 10300 * MiB and home.soft_bytes == 10 * GiB
    assert home.space_grace == "6days"
    assert (home.files, home.files_soft, home.files_hard) == (5210, 0, 0)
    assert scratch.filesystem == "/dev/mapper/vg-scratch"
    assert scratch.used_bytes == 28 * 1024 and scratch.files == 7
    # the group section (900G on /dev/sda2) is not the user's quota


def test_quota_output_without_limits_or_units_or_grace():
    assert hygiene.parse_quota(QUOTA_NONE) == []
    assert hygiene.parse_quota("") == []
    [blocks] = hygiene.parse_quota(QUOTA_BLOCKS)
    assert blocks.used_bytes == 4404224 * 1024 and blocks.soft_bytes == 10 * GiB
    assert blocks.files_soft == 100_000
    [hard] = hygiene.parse_quota(QUOTA_HARD_NO_GRACE)
    assert hard.used_bytes == 11 * GiB and hard.space_grace is None
    assert hard.files == 200_000 and hard.files_grace == "none"


def test_home_quota_row_is_found_by_the_device_of_homes_mount():
    mounts = (
        "/dev/sda1 / ext4 rw 0 0\n"
        "nfs01.cluster.example:/export/home /home nfs4 rw 0 0\n"
        "/dev/mapper/vg-scratch /scratch\\040space xfs rw 0 0\n"
    )
    rows = hygiene.parse_quota(QUOTA_NFS_WRAPPED)
    device = hygiene.mount_device(Path("/home/bob"), mounts)
    assert device == "nfs01.cluster.example:/export/home"
    assert hygiene.quota_for(rows, device).used_bytes == 10300 * MiB
    assert hygiene.mount_device(Path("/scratch space/x"), mounts) == "/dev/mapper/vg-scratch"
    assert hygiene.quota_for(rows, "/dev/sda1") is None
    assert hygiene.quota_for(hygiene.parse_quota(QUOTA_LOCAL), None).filesystem == "/dev/sda2"


# ----------------------------------------------------------------------------------- usage


def test_usage_lists_home_storage_each_cache_and_each_env(two_envs):
    h = two_envs
    report = result_of(ok(h, "usage", "--json"))
    assert report["home"]["path"] == str(h["home"])
    assert report["storage"]["path"] == str(h["storage"])
    assert [c["name"] for c in report["caches"]] == ["rattler", "pip", "uv", "conda-pkgs"]
    assert {e["name"] for e in report["envs"]} == {"e1", "e2"}
    rattler = report["caches"][0]
    assert rattler["exists"] and rattler["files"] > 0 and rattler["last_used"]
    assert all(e["files"] > 0 and e["apparent_bytes"] > 0 for e in report["envs"])
    assert report["storage_free_bytes"] > 0
    text = ok(h, "usage").stdout
    assert "e1" in text and "rattler" in text and "home quota" in text


def test_usage_counts_a_hardlinked_file_once(ready_home):
    h = ready_home
    ok(h, "create", "e1", "demo-tool", "-c", h["url"])
    before = result_of(ok(h, "usage", "--json"))
    big = pkgs(h) / "demo-tool-1.0-0" / "share" / "big.bin"
    big.write_bytes(b"\0" * (4 * MiB))
    os.link(big, prefix(h, "e1") / "share" / "big.bin")
    os.link(big, prefix(h, "e1") / "share" / "big-again.bin")
    after = result_of(ok(h, "usage", "--json"))

    def grew(kind: str, key: str, name: str | None = None) -> int:
        rows = after[kind] if isinstance(after[kind], list) else [after[kind]]
        old = before[kind] if isinstance(before[kind], list) else [before[kind]]
        pick = [r for r in rows if name in (None, r["name"])][0]
        was = [r for r in old if name in (None, r["name"])][0]
        return pick[key] - was[key]

    assert grew("storage", "apparent_bytes") == 4 * MiB  # three names, one file
    assert grew("storage", "files") == 3
    assert grew("envs", "apparent_bytes", "e1") == 4 * MiB  # two names in e1, once
    assert grew("caches", "apparent_bytes", "rattler") == 4 * MiB
    # linked from both: deleting either alone frees none of it
    assert grew("envs", "unique_bytes", "e1") == 0
    assert grew("caches", "unique_bytes", "rattler") == 0


def test_usage_measures_home_against_the_home_quota_setting(ready_home):
    h = ready_home
    (h["home"] / "data.bin").write_bytes(b"x" * (2 * MiB))
    site = h["root"] / "site.toml"
    site.write_text('home_quota = "4M"\n')
    report = result_of(ok(h, "usage", "--json", HPCENV_SITE_CONFIG=str(site)))
    quota = report["home_quota"]
    # with `quota` absent, or answering nothing for this filesystem, the setting is used
    assert quota["source"] == "home_quota setting"
    assert quota["limit_bytes"] == 4 * MiB
    assert 2 * MiB <= quota["used_bytes"] < 3 * MiB
    assert 50 <= quota["used_percent"] < 75


# ----------------------------------------------------------------------------------- clean


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
    assert not (h["storage"] / ".cache" / "rattler" / hygiene.TRASH_NAME).exists()
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
    plan = hygiene.plan_clean(layout)
    assert [Path(i.path).name for i in plan.items if i.kind == "package"] == ["libnum-2.0-0"]
    ok(h, "create", "late", "clash-a", "-c", h["url"])  # links libnum 2.0 again
    report = hygiene.execute_clean(plan)
    [item] = [i for i in report.items if i.kind == "package"]
    assert item.status == "kept: in use now" and report.freed_bytes == 0
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
        killed = run(h, "clean", "--yes", HPCENV_TEST_KILL_AFTER=str(k))
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
    return [hygiene.is_env(p) for p in paths]


def _packages_in_use_as_user(prefixes: list[Path]) -> list[str]:
    return hygiene.packages_in_use(prefixes)[2]


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user (nobody)")
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
