"""A site package cache filled by an admin, linked from by real users (root only).

root (the admin) fills a layer with `hpcenv cache fill`; hpcalice creates envs from it with
the real CLI as herself, with the kernel's `fs.protected_hardlinks=1` (she may not hardlink
root's files). On an XFS made with reflink=1 her env's files share the layer's extents; on
ext4 (/tmp here) they are copies, and the report says which; root's own env hardlinks.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcenv import engine, pkgcache, sitelink
from hpcenv.channel import PackageRecipe, build_channel
from tests.conftest import IS_ROOT, need
from tests.fs import cli_env, hpcenv, snapshot, xfs_reflink
from tests.users import chown_tree, ensure_users, hpcenv_as, readable_copy

KiB = 1024
BIG = 256 * KiB  # per file: real extents, far above any metadata noise


def _packages() -> list[PackageRecipe]:
    return [
        PackageRecipe("alpha", "1.0", files={f"share/alpha/f{i}": bytes([65 + i]) * BIG for i in range(4)}),
        PackageRecipe(
            "beta",
            "1.0",
            depends=("alpha",),
            files={"share/beta/data": b"b" * BIG, "bin/beta": "#!/bin/sh\necho beta\n"},
            executables=frozenset({"bin/beta"}),
        ),
        PackageRecipe("gamma", "1.0", files={"share/gamma/x": b"g" * (16 * KiB)}),
        PackageRecipe(
            "odd",
            "1.0",
            files={"share/odd/secret": "s", "share/odd/open": "o", "bin/odd": "#!/bin/sh\n"},
            modes={"share/odd/secret": 0o600, "share/odd/open": 0o666, "bin/odd": 0o4755},
        ),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def users():
    need("root", IS_ROOT, "creating users hpcalice, hpcbob, hpccarol needs root")
    ensure_users()
    return "hpcalice", "hpcbob", "hpccarol"


@pytest.fixture(scope="module")
def site_channel(users, tmp_path_factory):
    """The test packages where every user can read them."""
    built = tmp_path_factory.mktemp("site-channel")
    build_channel(built, _packages())
    base = Path(tempfile.mkdtemp(prefix="hpcenv-sitechan-"))
    base.chmod(0o755)
    yield readable_copy(built, base / "channel").as_uri()
    shutil.rmtree(base)


@dataclass
class Site:
    base: Path
    layer: Path
    config: Path
    url: str
    env: dict  # user -> environment for the CLI

    def prefix(self, user: str, name: str) -> Path:
        return Path(self.env[user]["HPCENV_STORAGE"]) / "envs" / name

    def own_cache(self, user: str) -> Path:
        return Path(self.env[user]["HPCENV_STORAGE"]) / ".cache" / "rattler" / "pkgs"

    def run(self, user: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
        env = {**self.env[user], **extra}
        if user == "root":
            return hpcenv(*args, env=env, stdin=subprocess.DEVNULL)
        return hpcenv_as(user, *args, env=env)

    def ok(self, user: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
        result = self.run(user, *args, **extra)
        assert result.returncode == 0, (args, result.stderr)
        return result

    def fill(self, *specs: str, **extra: str) -> dict:
        out = self.ok("root", "cache", "fill", *specs, "-c", self.url, "--json", **extra)
        return json.loads(out.stdout)["result"]

    def create(self, user: str, name: str, *specs: str) -> dict:
        out = self.ok(
            user, "create", "-p", str(self.prefix(user, name)), *specs, "-c", self.url, "--json"
        )
        return json.loads(out.stdout)["result"]


def _make_site(base: Path, fs_root: Path, url: str, config_extra: str = "") -> Site:
    """A layer at fs_root/site (not yet filled), users' storage on fs_root, homes on base."""
    layer = fs_root / "site" / "pkgs"
    layer.parent.mkdir(mode=0o755)
    config = base / "site.toml"
    config.write_text(f'package_caches = ["{layer}"]\n{config_extra}')
    config.chmod(0o644)
    env = {}
    for user in ("hpcalice", "hpcbob", "hpccarol", "root"):
        home, storage = base / "homes" / user, fs_root / "storage" / user
        home.mkdir(parents=True)
        storage.mkdir(parents=True)
        if user != "root":
            chown_tree(home, user)
            chown_tree(storage, user)
        home.chmod(0o700)
        storage.chmod(0o700)
        env[user] = cli_env(home, storage, HPCENV_SITE_CONFIG=str(config))
    for d in (base / "homes", fs_root / "storage"):
        d.chmod(0o755)
    return Site(base, layer, config, url, env)


@pytest.fixture
def ext4_site(users, site_channel):
    base = Path(tempfile.mkdtemp(prefix="hpcenv-site-"))
    base.chmod(0o755)
    (base / "fs").mkdir(mode=0o755)
    yield _make_site(base, base / "fs", site_channel)
    shutil.rmtree(base)


@pytest.fixture
def xfs_site(users, site_channel):
    need("mkfs.xfs", shutil.which("mkfs.xfs") is not None, "apt-get install xfsprogs")
    base = Path(tempfile.mkdtemp(prefix="hpcenv-site-xfs-"))
    base.chmod(0o755)
    with xfs_reflink(base / "xfs", base / "xfs.img") as fs:
        fs.chmod(0o755)
        yield _make_site(base, fs, site_channel)
    shutil.rmtree(base)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def _filefrag_shared(path: Path) -> bool:
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True)
    return "shared" in out.stdout


# ------------------------------------------------------------------ linking, per filesystem


def test_user_env_shares_extents_with_the_layer_on_xfs_and_costs_no_data_blocks(xfs_site):
    site = xfs_site
    filled = site.fill("beta")
    assert {p["name"] for p in filled["packages"]} == {"alpha-1.0-0", "beta-1.0-0"}
    layer_bytes = 5 * BIG
    free_before = _free_bytes(site.layer)

    report = site.create("hpcalice", "e1", "beta", "gamma")

    used = free_before - _free_bytes(site.layer)
    prefix = site.prefix("hpcalice", "e1")
    env_file = prefix / "share" / "alpha" / "f0"
    layer_file = site.layer / "alpha-1.0-0" / "share" / "alpha" / "f0"
    assert report["site"]["method"] == "reflink"
    assert report["site"]["packages"] == 2
    assert report["site"]["not_duplicated_bytes"] >= layer_bytes
    # her own inode (protected_hardlinks: no hardlink to root's file), root's extents
    assert os.stat(env_file).st_uid == os.stat(site.own_cache("hpcalice")).st_uid
    assert os.stat(env_file).st_ino != os.stat(layer_file).st_ino
    assert _filefrag_shared(env_file) and _filefrag_shared(layer_file)
    assert sitelink.link_method(str(env_file), str(layer_file)) == "reflink"
    # XFS reports the shared blocks in each file's st_blocks (what `du` shows), but the
    # filesystem's free blocks fall by the env's own small files only (conda-meta, gamma,
    # beta's script), not by the 1.25 MiB of data it shares with the layer
    assert os.stat(env_file).st_blocks * 512 >= BIG
    assert used < layer_bytes // 2, used
    # only what no layer holds is in her own cache
    assert sorted(os.listdir(site.own_cache("hpcalice"))) == ["gamma-1.0-0", "gamma-1.0-0.lock"]
    run = subprocess.run([str(prefix / "bin" / "beta")], capture_output=True, text=True)
    assert run.stdout == "beta\n"


def _protected_hardlinks() -> bool:
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def test_user_env_on_ext4_is_copied_from_the_layer_and_the_report_says_so(ext4_site):
    need("fs.protected_hardlinks=1", _protected_hardlinks(), "sysctl fs.protected_hardlinks=1")
    site = ext4_site
    site.fill("beta")
    prefix = site.prefix("hpcalice", "e1")
    out = site.ok("hpcalice", "create", "-p", str(prefix), "beta", "-c", site.url)
    assert "site package cache: 2 package(s)" in out.stdout and "copied" in out.stdout
    env_file = prefix / "share" / "alpha" / "f0"
    layer_file = site.layer / "alpha-1.0-0" / "share" / "alpha" / "f0"
    assert os.stat(env_file).st_ino != os.stat(layer_file).st_ino
    assert os.stat(layer_file).st_nlink == 1
    assert sitelink.link_method(str(env_file), str(layer_file)) == "copy"
    assert env_file.read_bytes() == layer_file.read_bytes()
    # nothing was downloaded into her cache for the layer's packages
    assert not site.own_cache("hpcalice").exists() or not any(
        n.startswith(("alpha", "beta")) for n in os.listdir(site.own_cache("hpcalice"))
    )


def test_admin_env_on_ext4_hardlinks_and_a_strict_umask_leaves_the_layer_modes_alone(
    ext4_site,
):
    site = ext4_site
    site.fill("beta")
    layer_file = site.layer / "alpha-1.0-0" / "share" / "alpha" / "f0"
    before = snapshot(site.layer)
    prefix = site.prefix("root", "e1")
    result = subprocess.run(
        [sys.executable, "-m", "hpcenv", "create", "-p", str(prefix), "beta", "-c", site.url, "--json"],
        env=site.env["root"], capture_output=True, text=True, umask=0o077, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"]["site"]["method"] == "hardlink"
    assert os.stat(prefix / "share" / "alpha" / "f0").st_ino == os.stat(layer_file).st_ino
    assert stat.S_IMODE(os.stat(layer_file).st_mode) == 0o644  # not the umask's 0600
    after = snapshot(site.layer)
    assert {k: v[:3] for k, v in after.items()} == {k: v[:3] for k, v in before.items()}
    # any user still reads the layer
    site.create("hpcalice", "e1", "beta")


# ------------------------------------------------------------------ the user cannot change it


def test_a_user_cannot_fill_a_site_layer(ext4_site):
    site = ext4_site
    site.fill("alpha")
    before = snapshot(site.layer)
    for args in (("--to", str(site.layer)), ()):
        result = site.run("hpcalice", "cache", "fill", "beta", "-c", site.url, *args)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert "only root or the site's package cache account" in result.stderr
    assert snapshot(site.layer) == before


def test_install_remove_and_clean_never_write_into_the_layer(ext4_site):
    site = ext4_site
    site.fill("beta", "gamma")
    before = snapshot(site.layer)
    site.create("hpcalice", "e1", "alpha")
    prefix = str(site.prefix("hpcalice", "e1"))
    installed = json.loads(site.ok("hpcalice", "install", prefix, "beta", "--json").stdout)
    assert installed["result"]["site"]["packages"] == 1
    site.ok("hpcalice", "remove", prefix, "beta", "--yes")
    site.ok("hpcalice", "remove", prefix, "--yes")
    site.ok("hpcalice", "clean", "--yes")
    assert snapshot(site.layer) == before


def test_a_users_own_writable_layer_and_a_loose_one_are_ignored_with_a_warning(ext4_site):
    site = ext4_site
    site.fill("beta")
    mine = site.base / "fs" / "alice-layer"
    shutil.copytree(site.layer, mine, symlinks=True)
    chown_tree(mine, "hpcalice")
    loose = site.base / "fs" / "loose-layer"
    shutil.copytree(site.layer, loose, symlinks=True)
    loose.chmod(0o777)
    for layer, why in ((mine, "belongs to hpcalice"), (loose, "is writable by everyone")):
        site.config.write_text(f'package_caches = ["{layer}"]\n')
        name = layer.name
        result = site.ok(
            "hpcalice",
            "create",
            "-p",
            str(site.prefix("hpcalice", name)),
            "beta",
            "-c",
            site.url,
            "--json",
        )
        warnings = [line for line in result.stderr.splitlines() if "warning" in line]
        assert (
            len(warnings) == 1
            and f"ignoring the site package cache {layer}: it {why}" in warnings[0]
        )
        assert json.loads(result.stdout)["result"]["site"] is None
    assert sorted(n for n in os.listdir(site.own_cache("hpcalice")) if not n.endswith(".lock")) == [
        "alpha-1.0-0", "beta-1.0-0"
    ]  # fmt: skip


def test_a_damaged_layer_entry_is_skipped_and_never_repaired_by_the_user(ext4_site):
    site = ext4_site
    site.fill("beta")
    damaged = site.layer / "alpha-1.0-0" / "share" / "alpha" / "f1"
    damaged.write_bytes(b"short")
    before = snapshot(site.layer)
    out = site.ok(
        "hpcalice",
        "create",
        "-p",
        str(site.prefix("hpcalice", "e1")),
        "beta",
        "-c",
        site.url,
        "--json",
    )
    assert "skipped alpha-1.0-0 in the site package cache" in out.stderr
    assert "share/alpha/f1 has 5 bytes" in out.stderr
    report = json.loads(out.stdout)["result"]
    assert report["site"]["packages"] == 1  # beta still from the layer
    assert (site.prefix("hpcalice", "e1") / "share" / "alpha" / "f1").stat().st_size == BIG
    assert snapshot(site.layer) == before
    # the admin's next fill replaces it
    refilled = site.fill("beta")
    status = {p["name"]: p["status"] for p in refilled["packages"]}
    assert status["alpha-1.0-0"].startswith("replaced: share/alpha/f1 has 5 bytes")
    assert status["beta-1.0-0"] == "present"
    assert damaged.stat().st_size == BIG


def test_a_package_cache_owner_account_fills_and_another_users_layer_is_ignored(
    users, site_channel
):
    base = Path(tempfile.mkdtemp(prefix="hpcenv-site-owner-"))
    base.chmod(0o755)
    try:
        (base / "fs").mkdir(mode=0o755)
        site = _make_site(base, base / "fs", site_channel, 'package_cache_owner = "hpcbob"\n')
        site.layer.parent.chmod(0o755)
        chown_tree(site.layer.parent, "hpcbob")
        site.ok("hpcbob", "cache", "fill", "beta", "-c", site.url)
        assert (
            os.stat(site.layer / "alpha-1.0-0").st_uid == os.stat(site.env["hpcbob"]["HOME"]).st_uid
        )
        report = site.create("hpcalice", "e1", "beta")
        assert report["site"]["packages"] == 2
        carol = site.run(
            "hpccarol", "cache", "fill", "beta", "-c", site.url, "--to", str(site.layer)
        )
        assert carol.returncode == 2
        # a layer of carol's, who is not the owner account, is not trusted
        other = base / "fs" / "carol-layer"
        shutil.copytree(site.layer, other, symlinks=True)
        chown_tree(other, "hpccarol")
        site.config.write_text(f'package_caches = ["{other}"]\npackage_cache_owner = "hpcbob"\n')
        out = site.ok(
            "hpcalice", "create", "-p", str(site.prefix("hpcalice", "e2")), "beta", "-c", site.url
        )
        assert f"ignoring the site package cache {other}: it belongs to hpccarol" in out.stderr
    finally:
        shutil.rmtree(base)


# ------------------------------------------------------------------ fill


def test_fill_makes_every_package_public_and_strips_setuid(ext4_site):
    site = ext4_site
    result = subprocess.run(
        [sys.executable, "-m", "hpcenv", "cache", "fill", "odd", "-c", site.url],
        env=site.env["root"], capture_output=True, text=True, umask=0o077, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entry = site.layer / "odd-1.0-0"
    modes = {
        str(p.relative_to(entry)): stat.S_IMODE(p.lstat().st_mode)
        for p in [entry, *entry.rglob("*")]
        if not p.is_symlink()
    }
    assert modes["share/odd/secret"] == 0o644
    assert modes["share/odd/open"] == 0o644
    assert modes["bin/odd"] == 0o755
    assert all(m & 0o444 == 0o444 and not m & 0o022 for m in modes.values())
    assert stat.S_IMODE(site.layer.stat().st_mode) == 0o755
    assert stat.S_IMODE((site.layer / ".hpcenv").stat().st_mode) == 0o700
    assert pkgcache.check_cache_entry(entry, {0}) is None
    site.create("hpcalice", "e1", "odd")


def test_a_fill_killed_at_any_step_leaves_only_whole_packages_and_rerunning_finishes(
    ext4_site,
):
    site = ext4_site
    k = 1
    while True:
        killed = site.run(
            "root", "cache", "fill", "beta", "-c", site.url, _HPCENV_TEST_KILL_AFTER=str(k)
        )
        visible = [
            n for n in os.listdir(site.layer) if not n.startswith(".") and not n.endswith(".lock")
        ]
        for name in visible:  # whatever a user can see is whole
            assert pkgcache.check_cache_entry(site.layer / name, {0}) is None, (k, name)
        if killed.returncode == 0:
            break
        assert killed.returncode == -9, killed.stderr
        again = site.fill("beta")
        assert {p["name"] for p in again["packages"]} == {"alpha-1.0-0", "beta-1.0-0"}
        assert [n for n in os.listdir(site.layer) if n.startswith(".hpcenv-fill-")] == []
        shutil.rmtree(site.layer)
        k += 1
    assert k > 2


def test_fill_refuses_bad_input_with_one_line_and_changes_nothing(ext4_site, tmp_path):
    site = ext4_site
    for args, words in (
        (("numpy >>= 1",), "invalid package spec"),
        ((), "no site package cache is configured"),
    ):
        env = {"HPCENV_SITE_CONFIG": str(tmp_path / "none.toml")} if not args else {}
        result = site.run("root", "cache", "fill", *(args or ("beta",)), "-c", site.url, **env)
        assert result.returncode == 2 and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not site.layer.exists()


# ------------------------------------------------------------------ list, usage


def test_cache_list_shows_layers_trust_sizes_packages_and_the_own_cache(ext4_site):
    site = ext4_site
    site.fill("beta")
    site.create("hpcalice", "e1", "beta", "gamma")
    (site.layer / "alpha-1.0-0" / "share" / "alpha" / "f2").write_bytes(b"x")
    listing = json.loads(site.ok("hpcalice", "cache", "list", "--json").stdout)["result"]
    (layer,) = listing["layers"]
    assert layer["path"] == str(site.layer) and layer["trusted"] and layer["packages"] == 2
    assert layer["apparent_bytes"] >= 4 * BIG  # f2 of alpha is now one byte
    status = {p["name"]: p["status"] for p in layer["contents"]}
    assert status["beta-1.0-0"] == "ok" and status["alpha-1.0-0"].startswith("damaged: ")
    assert (
        listing["own"]["packages"] == 1 and listing["own"]["contents"][0]["name"] == "gamma-1.0-0"
    )
    text = site.ok("hpcalice", "cache", "list").stdout
    assert str(site.layer) in text and "beta-1.0-0" in text


def test_usage_counts_reflinked_layer_files_as_the_sites_not_the_users(xfs_site):
    site = xfs_site
    site.fill("beta")
    site.create("hpcalice", "e1", "beta", "gamma")
    usage = json.loads(site.ok("hpcalice", "usage", "--json").stdout)["result"]
    (env,) = [e for e in usage["envs"] if e["path"] == str(site.prefix("hpcalice", "e1"))]
    assert env["site_bytes"] >= 5 * BIG
    assert env["unique_bytes"] < BIG  # her own: gamma, the script, conda-meta
    assert usage["site_extents_counted"] is True
    assert "are the site's" in site.ok("hpcalice", "usage").stdout


def test_usage_on_ext4_counts_a_users_copies_as_hers(ext4_site):
    site = ext4_site
    site.fill("beta")
    site.create("hpcalice", "e1", "beta")
    usage = json.loads(site.ok("hpcalice", "usage", "--json").stdout)["result"]
    (env,) = [e for e in usage["envs"] if e["path"] == str(site.prefix("hpcalice", "e1"))]
    assert env["site_bytes"] == 0 and env["unique_bytes"] >= 5 * BIG


# ------------------------------------------------------------------ settings


def test_package_caches_must_be_absolute_paths(fake_home, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('package_caches = ["relative/pkgs"]\n')
    env = cli_env(fake_home["home"], fake_home["storage"], HPCENV_SITE_CONFIG=str(config))
    result = hpcenv("cache", "list", env=env)
    assert result.returncode == 2
    assert "package_caches" in result.stderr and "absolute paths" in result.stderr
    env["HPCENV_SITE_CONFIG"] = str(tmp_path / "none.toml")
    env["HPCENV_PACKAGE_CACHES"] = f"{tmp_path}/a,{tmp_path}/b"
    listing = json.loads(hpcenv("cache", "list", "--json", env=env).stdout)["result"]
    assert [r["path"] for r in listing["layers"]] == [f"{tmp_path}/a", f"{tmp_path}/b"]
    assert [r["why"] for r in listing["layers"]] == ["it does not exist"] * 2


# ------------------------------------------------------------------ real packages


def test_a_real_python_and_numpy_from_the_layer_run_for_a_user_on_xfs(xfs_site, real_channel):
    site = xfs_site
    channel = readable_copy(real_channel.path, site.base / "real-channel")
    site.url = channel.as_uri()
    filled = site.fill("python", "numpy", "tqdm")
    # without the layer, create would refuse: it asks for the download and the unpacked size
    archives = sum(p["bytes"] for p in filled["packages"])
    assert archives * 5 > _free_bytes(site.layer)
    report = site.create("hpcalice", "sci", "python", "numpy", "tqdm")
    assert report["site"]["packages"] == 3 and report["site"]["method"] == "reflink"
    assert report["site"]["not_duplicated_bytes"] > 20 * 1024 * KiB
    prefix = site.prefix("hpcalice", "sci")
    code = "import numpy, sys; print(sys.prefix, numpy.linalg.det(numpy.eye(3)))"
    run = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", code], capture_output=True, text=True,
        user="hpcalice", env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(prefix), "1.0"]
    tqdm = subprocess.run(
        [str(prefix / "bin" / "tqdm"), "--version"], capture_output=True, text=True, user="hpcalice"
    )  # fmt: skip
    assert tqdm.returncode == 0 and tqdm.stdout.strip() == real_channel.tqdm_version
    # the noarch package's files were found in the layer at their package paths
    usage = json.loads(site.ok("hpcalice", "usage", "--json").stdout)["result"]
    (env,) = [e for e in usage["envs"] if e["path"] == str(prefix)]
    assert env["site_bytes"] > 20 * 1024 * KiB


# ------------------------------------------------------------------ the engine's view of layers


@pytest.fixture
def layered(tmp_path):
    """A layer holding alpha and beta (filled through the engine, as root), a user cache."""
    need("root", IS_ROOT, "layer entries owned by root")
    url = build_channel(tmp_path / "chan", _packages())
    solution = engine.solve([url], ["beta"], cache_dir=tmp_path / "cache")
    layer = tmp_path / "layer"
    layer.mkdir()
    for package in solution.packages:
        entry = layer / pkgcache.entry_name(package)
        pkgcache.write_cache_metadata(entry, engine.fetch_package(package, entry))
    return solution, layer, tmp_path / "cache"


def test_a_view_entry_rattler_extracted_is_set_aside_and_linked_to_the_layer_again(
    layered, tmp_path
):
    solution, layer, cache = layered
    view = engine.site_view_dir(cache)
    stray = view / "alpha-1.0-0"
    (stray / "info").mkdir(parents=True)
    engine.install(solution, tmp_path / "env", cache_dir=cache, layers=[layer])
    assert os.readlink(stray) == str(layer / "alpha-1.0-0")
    assert any(n.startswith("alpha-1.0-0-site-") for n in os.listdir(cache / ".hpcenv-trash"))
    assert sitelink.linked_from_layers(tmp_path / "env", [layer])[0].name == "alpha"


def test_a_layer_entry_of_another_build_under_the_same_name_is_skipped(layered, tmp_path):
    solution, layer, cache = layered
    pkgcache.write_cache_metadata(layer / "alpha-1.0-0", "00" * 32)
    warnings = engine.install(solution, tmp_path / "env", cache_dir=cache, layers=[layer])
    assert any("alpha-1.0-0" in w and "sha256 differs" in w for w in warnings)
    assert [p.name for p in sitelink.linked_from_layers(tmp_path / "env", [layer])] == ["beta"]
    assert (engine.package_cache_dir(cache) / "alpha-1.0-0").is_dir()
