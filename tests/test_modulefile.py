"""Lmod modulefiles, checked by the real Lmod: load, run, unload, swap, hostile names."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcenv.errors import RefusedError, UsageError
from hpcenv.modulefile import (
    env_modulefile,
    lua_string,
    self_modulefile,
    write_modulefile,
)
from tests.conftest import need

pytestmark = pytest.mark.lmod

_INIT_CANDIDATES = [
    "/usr/share/lmod/lmod/init/bash",  # Debian/Ubuntu `lmod`
    "/opt/apps/lmod/lmod/init/bash",  # Lmod's own default install
    "/usr/share/lmod/lmod/init/bash.in",
]
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# names Lmod loads and unloads; '"' and non-ASCII it cannot (refused, tested below)
HOSTILE_NAMES = ["sp ace", "q'uote", "d$ollar", "br]]x", "eq]==]x", "`x`", "a;b&c|d", "%s(*)"]
# prefixes may hold anything but ':' and control characters
HOSTILE_PATHS = [*HOSTILE_NAMES, 'dq"x', "b\\s", "caf\u00e9", "]]=]]==]"]


def lmod_init() -> Path | None:
    """The bash init script of the installed Lmod, or None."""
    pkg = os.environ.get("LMOD_PKG")
    for candidate in [f"{pkg}/init/bash" if pkg else None, *_INIT_CANDIDATES]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture
def lmod(tmp_path: Path):
    """Run a bash script with Lmod initialised, a clean environment and an empty MODULEPATH."""
    init = lmod_init()
    need("Lmod", init is not None, "no Lmod init script (apt-get install lmod)")
    home = tmp_path / "lmod-home"
    home.mkdir()

    def run(script: str, **env: str) -> subprocess.CompletedProcess:
        base = {
            "HOME": str(home),
            "PATH": BASE_PATH,
            "USER": "tester",
            "LC_ALL": "C.UTF-8",
            "LMOD_ALLOW_ROOT_USE": "yes",
        }
        return subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", f"source {shlex.quote(str(init))}\n{script}"],
            env={**base, **env},
            capture_output=True,
            timeout=120,
        )

    return run


def make_prefix(root: Path, label: str) -> Path:
    """A hand-made environment: PREFIX/bin/tool prints which prefix it came from."""
    prefix = root / label
    (prefix / "bin").mkdir(parents=True)
    tool = prefix / "bin" / "tool"
    tool.write_bytes(os.fsencode(f"#!/bin/sh\necho tool from {shlex.quote(label)}\n"))
    tool.chmod(0o755)
    return prefix


def install(prefix: Path, name: str, modules: Path, **kw) -> Path:
    return write_modulefile(env_modulefile(prefix, name=name, **kw), modules, name)


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return os.fsdecode(result.stdout).splitlines()


def words(text: bytes) -> str:
    """Lmod wraps its messages: compare them with whitespace runs folded to one space."""
    return " ".join(os.fsdecode(text).split())


def q(value: str | Path) -> str:
    return shlex.quote(os.fspath(value))


# ---------------------------------------------------------------- environment modules


def test_load_puts_prefix_bin_first_and_sets_conda_variables(lmod, tmp_path: Path) -> None:
    prefix = make_prefix(tmp_path, "env1")
    modules = tmp_path / "modules"
    install(prefix, "env1", modules)
    r = lmod(
        f"module use {q(modules)}; module load env1 || exit 9\n"
        'tool; echo "$CONDA_PREFIX"; echo "$CONDA_DEFAULT_ENV"; echo "$PYTHONNOUSERSITE"\n'
        'echo "$PATH"'
    )
    assert r.returncode == 0, r.stderr
    assert lines(r) == [
        "tool from env1",
        str(prefix),
        "env1",
        "1",
        f"{prefix}/bin:{BASE_PATH}",
    ]


def test_no_user_site_false_leaves_pythonnousersite_alone(lmod, tmp_path: Path) -> None:
    prefix = make_prefix(tmp_path, "env1")
    modules = tmp_path / "modules"
    install(prefix, "env1", modules, no_user_site=False)
    r = lmod(
        f'module use {q(modules)}; module load env1 || exit 9\necho "${{PYTHONNOUSERSITE-unset}}"'
    )
    assert r.returncode == 0, r.stderr
    assert lines(r) == ["unset"]


def test_unload_restores_path_and_earlier_values_exactly(lmod, tmp_path: Path) -> None:
    prefix = make_prefix(tmp_path, "env1")
    modules = tmp_path / "modules"
    install(prefix, "env1", modules)
    path = f"/opt/first:{BASE_PATH}:/opt/last"
    r = lmod(
        f"module use {q(modules)}\n"
        'before="$PATH"\n'
        "module load env1 || exit 9\n"
        'echo "$CONDA_PREFIX"\n'
        "module unload env1 || exit 8\n"
        '[ "$PATH" = "$before" ] && echo same-path\n'
        'echo "${CONDA_PREFIX-unset} ${CONDA_DEFAULT_ENV-unset} ${PYTHONNOUSERSITE-unset}"\n'
        "command -v tool || echo no-tool",
        PATH=path,
        CONDA_PREFIX="/old/env",
    )
    assert r.returncode == 0, r.stderr
    # `module use` itself does not touch PATH; CONDA_PREFIX set before the load comes back
    assert lines(r) == [str(prefix), "same-path", "/old/env unset unset", "no-tool"]


def test_second_env_module_replaces_the_first_by_default(lmod, tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    install(make_prefix(tmp_path, "a"), "a", modules)
    b = make_prefix(tmp_path, "b")
    install(b, "b", modules)
    r = lmod(
        f"module use {q(modules)}; module load a || exit 9\n"
        "module load b; echo rc=$?\n"
        'tool; echo "$CONDA_PREFIX $CONDA_DEFAULT_ENV"; echo "$PATH"\n'
        "module -t list 2>&1"
    )
    assert r.returncode == 0, r.stderr
    out = lines(r)
    assert out[:4] == ["rc=0", "tool from b", f"{b} b", f"{b}/bin:{BASE_PATH}"]
    assert out[4:] == ["b"]  # only b is loaded; a's bin left PATH
    assert 'automatically replacing "a" with "b"' in words(r.stderr)


def test_second_env_module_is_refused_when_the_site_turns_auto_swap_off(
    lmod, tmp_path: Path
) -> None:
    modules = tmp_path / "modules"
    a = make_prefix(tmp_path, "a")
    install(a, "a", modules)
    install(make_prefix(tmp_path, "b"), "b", modules)
    r = lmod(
        f"module use {q(modules)}; module load a || exit 9\n"
        'module load b; echo rc=$?; tool; echo "$CONDA_PREFIX"; module -t list 2>&1',
        LMOD_AUTO_SWAP="no",
    )
    assert r.returncode == 0, r.stderr
    assert lines(r) == ["rc=1", "tool from a", str(a), "a"]
    assert "You can only have one hpcenv module loaded at a time" in words(r.stderr)


def load_and_unload(lmod, modules: Path, name: str) -> subprocess.CompletedProcess:
    return lmod(
        f"module use {q(modules)}; module load {q(name)} || exit 9\n"
        'tool; printf "%s\\n" "$CONDA_PREFIX" "$CONDA_DEFAULT_ENV"\n'
        f"module unload {q(name)} || exit 8\n"
        'printf "%s\\n" "$PATH" "${CONDA_PREFIX-unset}"; module -t list 2>&1'
    )


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_names_load_and_unload(lmod, tmp_path: Path, hostile: str) -> None:
    prefix = make_prefix(tmp_path, "env")
    modules = tmp_path / "modules"
    written = install(prefix, hostile, modules)
    assert written == modules / f"{hostile}.lua"
    r = load_and_unload(lmod, modules, hostile)
    assert r.returncode == 0, r.stderr
    assert lines(r) == [
        "tool from env",
        str(prefix),
        hostile,
        BASE_PATH,
        "unset",
        "No modules loaded",
    ]


@pytest.mark.parametrize("hostile", HOSTILE_PATHS)
def test_hostile_prefixes_load_and_unload(lmod, tmp_path: Path, hostile: str) -> None:
    prefix = make_prefix(tmp_path, f"p {hostile} ]] ]=] ]==] $HOME")
    modules = tmp_path / "modules"
    install(prefix, "env", modules)
    r = load_and_unload(lmod, modules, "env")
    assert r.returncode == 0, r.stderr
    assert lines(r) == [
        f"tool from {prefix.name}",
        str(prefix),
        "env",
        BASE_PATH,
        "unset",
        "No modules loaded",
    ]


@pytest.mark.parametrize("name", ['dq"x', "caf\u00e9", "\u6f22\u5b57"])
def test_names_lmod_cannot_unload_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="Lmod cannot unload"):
        env_modulefile(Path("/x"), name=name)
    with pytest.raises(UsageError, match="Lmod cannot unload"):
        write_modulefile("", Path("/nonexistent"), name)


def test_undecodable_bytes_in_the_prefix_reach_the_environment_unchanged(
    lmod, tmp_path: Path
) -> None:
    label = os.fsdecode(b"bytes-\xff\xfe")
    prefix = make_prefix(tmp_path, label)
    modules = tmp_path / "modules"
    install(prefix, "raw", modules)
    r = lmod(f'module use {q(modules)}; module load raw || exit 9\nprintf "%s" "$CONDA_PREFIX"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == os.fsencode(prefix)


# ---------------------------------------------------------------- hpcenv's own module


def test_self_module_puts_hpcenv_on_path_and_names_the_site_config(lmod, tmp_path: Path) -> None:
    bindir = tmp_path / "opt" / "hpcenv" / "bin"
    bindir.mkdir(parents=True)
    exe = bindir / "hpcenv"
    exe.write_text("#!/bin/sh\necho hpcenv here\n")
    exe.chmod(0o755)
    modules = tmp_path / "modules"
    site = tmp_path / "etc" / "site.toml"
    text = self_modulefile(hpcenv_bin=exe, version="0.1.0", site_config=site)
    write_modulefile(text, modules / "hpcenv", "0.1.0")
    script = (
        f"module use {q(modules)}; module load hpcenv || exit 9\n"
        'hpcenv; echo "$HPCENV_SITE_CONFIG"; module unload hpcenv; echo "$PATH"'
    )
    r = lmod(script, global_storage=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert lines(r) == ["hpcenv here", str(site), BASE_PATH]
    assert b"is not set" not in r.stderr

    unset = lmod(script)  # no $global_storage: the load says what to do
    assert unset.returncode == 0, unset.stderr
    assert "$global_storage is not set" in words(unset.stderr)
    assert "hpcenv setup --storage DIR" in words(unset.stderr)


def test_self_module_without_site_config_sets_no_variable(tmp_path: Path) -> None:
    text = self_modulefile(hpcenv_bin=Path("/opt/hpcenv/bin/hpcenv"), version="1.2")
    assert "HPCENV_SITE_CONFIG" not in text
    assert 'prepend_path("PATH", "/opt/hpcenv/bin")' in text


# ---------------------------------------------------------------- Lua strings


def lua_interpreter() -> str | None:
    """The Lua that Lmod itself runs (the shebang of its `lmod` command)."""
    init = lmod_init()
    if init is None:
        return None
    command = init.parent.parent / "libexec" / "lmod"
    try:
        first = command.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    return first[2:].strip().split()[0] if first.startswith("#!") else None


_values = st.lists(
    st.one_of(
        st.text(),
        st.binary().map(os.fsdecode),  # undecodable bytes, as file names can hold
        st.sampled_from(HOSTILE_PATHS + ["]]", "]=]", "\\123", "\\", '"', "\n", "\x00", "9"]),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=40, deadline=None)
@given(values=_values)
def test_lua_string_reads_back_as_the_same_bytes_in_lua(values: list[str]) -> None:
    lua = lua_interpreter()
    need("Lmod", lua is not None, "no Lmod (its Lua interpreter reads the strings back)")
    program = "".join(f"io.write(#{lua_string(v)}, ':', {lua_string(v)})\n" for v in values)
    out = subprocess.run([lua, "-"], input=program.encode(), capture_output=True, check=True)
    expected = b"".join(b"%d:%s" % (len(os.fsencode(v)), os.fsencode(v)) for v in values)
    assert out.stdout == expected


def test_lua_string_output_is_one_line_and_readable() -> None:
    assert lua_string('a "b" \\c\n\td') == '"a \\"b\\" \\\\c\\n\\td"'
    assert lua_string("caf\u00e9 ]]") == '"caf\u00e9 ]]"'
    assert lua_string("\x01" + "9") == '"\\0019"'  # three digits: the 9 is not swallowed
    assert lua_string(os.fsdecode(b"\xff")) == '"\\255"'


# ---------------------------------------------------------------- validation and writing


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "tab\there", "nl\n", "-x", " lead"])
def test_bad_module_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        env_modulefile(Path("/x"), name=name)
    with pytest.raises(UsageError):
        write_modulefile("", Path("/nonexistent"), name)


@pytest.mark.parametrize("prefix", ["relative/env", "/a:b/env", "/a\nb", "/a\x7fb"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(UsageError):
        env_modulefile(Path(prefix), name="ok")


def test_bad_family_and_storage_variable_are_refused() -> None:
    with pytest.raises(UsageError):
        env_modulefile(Path("/x"), name="ok", family='x") os.exit(1) --')
    with pytest.raises(UsageError):
        self_modulefile(hpcenv_bin=Path("/opt/bin/hpcenv"), version="1", storage_var="$x")
    with pytest.raises(UsageError):
        self_modulefile(hpcenv_bin=Path("/opt/bin/hpcenv"), version="1\n")


def test_write_creates_0755_dirs_and_a_0644_file_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        target = write_modulefile("-- x\n", tmp_path / "a" / "b", "env")
    finally:
        os.umask(old)
    assert target == tmp_path / "a" / "b" / "env.lua"
    assert target.read_text() == "-- x\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert sorted(p.name for p in target.parent.iterdir()) == ["env.lua"]  # no temp file left


def test_write_replaces_an_existing_module_and_a_symlink_in_its_place(tmp_path: Path) -> None:
    modules = tmp_path / "m"
    modules.mkdir()
    elsewhere = tmp_path / "elsewhere.lua"
    elsewhere.write_text("keep me\n")
    (modules / "env.lua").symlink_to(elsewhere)
    target = write_modulefile("-- new\n", modules, "env")
    assert not target.is_symlink() and target.read_text() == "-- new\n"
    assert elsewhere.read_text() == "keep me\n"


def test_write_refuses_a_world_writable_directory(tmp_path: Path) -> None:
    modules = tmp_path / "m"
    modules.mkdir()
    modules.chmod(0o1777)
    with pytest.raises(RefusedError) as err:
        write_modulefile("-- x\n", modules, "env")
    assert err.value.exit_code == 2
    assert list(modules.iterdir()) == []
