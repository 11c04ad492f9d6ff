"""Shared fixtures: an isolated HOME and storage, and the CI rule for real services."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hpcenv

pytest_plugins = [
    "tests.channels",  # real-channel fixtures: demo_channel, ready_home
    "tests.realpkgs",  # real_channel: python, numpy, tqdm built from real artifacts
    "tests.images",  # image envs: mount_root, image_home, fuse_for_users
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


_SRC = Path(__file__).resolve().parents[1] / "src"
if not Path(hpcenv.__file__).resolve().is_relative_to(_SRC):
    # An editable install of another checkout (or a worktree) would be tested instead of this one.
    raise RuntimeError(
        f"tests of {_SRC.parent} would import hpcenv from {hpcenv.__file__}; "
        f"run `pip install -e .` here or set PYTHONPATH={_SRC}"
    )


def need(component: str, available: bool, reason: str) -> None:
    """Skip when ``component`` is missing outside CI; fail when CI=true, so CI never skips it."""
    if available:
        return
    message = f"{component} unavailable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: this component must be present)")
    pytest.skip(message)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.root("why")`: the test needs root; through `need`, so CI never skips it."""
    marker = item.get_closest_marker("root")
    if marker is not None:
        need("root", IS_ROOT, marker.args[0] if marker.args else "this test needs root")


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A temp HOME and a temp storage root, set in the environment of this process."""
    home = tmp_path / "home"
    storage = tmp_path / "storage"
    home.mkdir()
    storage.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HPCENV_STORAGE", str(storage))
    monkeypatch.setenv("HPCENV_SITE_CONFIG", str(tmp_path / "no-site.toml"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("global_storage", raising=False)
    return {"home": home, "storage": storage, "root": tmp_path}


def run_as_user(user: str, fn, *args, **kwargs):
    """Run `fn(*args, **kwargs)` in a forked child that really is `user` (root only), return its result.

    The child drops to the user's uid, gid and groups, so the kernel's permission checks are
    real. Modules `fn` needs must already be imported (the interpreter may live in a
    directory the user cannot read).
    """
    import pickle
    import pwd

    entry = pwd.getpwnam(user)
    groups = os.getgrouplist(user, entry.pw_gid)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            os.setgroups(groups)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            try:
                outcome = ("ok", fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - sent back to the parent
                outcome = ("error", exc)
            data = pickle.dumps(outcome)
        except BaseException as exc:  # noqa: BLE001
            data = pickle.dumps(("error", RuntimeError(repr(exc))))
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "error":
        raise value
    return value
