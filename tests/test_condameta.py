"""conda's history format, read as conda reads it and written as conda writes it."""

from __future__ import annotations

import ast

from hpcenv.condameta import (
    canonical_channel,
    channel_short,
    cmd_specs,
    history_entry,
    read_history,
    requested_from_history,
)

HISTORY = """\
==> 2024-05-01 10:00:00 <==
# cmd: /opt/conda/bin/conda create -n x python=3.11 hello -c conda-forge
# conda version: 24.1.2
+conda-forge/linux-64::python-3.11.0-h0
+conda-forge/noarch::hello-1.0-pyh0
# update specs: ["python=3.11", "hello"]
==> 2024-05-02 10:00:00 <==
# cmd: /opt/conda/bin/conda install -n x numtool
# conda version: 24.1.2
+conda-forge/linux-64::numtool-1.0-0
# update specs: ['numtool']
==> 2024-05-03 10:00:00 <==
# cmd: /opt/conda/bin/conda remove -n x hello
# conda version: 24.1.2
-conda-forge/noarch::hello-1.0-pyh0
# remove specs: ['hello']
==> 2019-01-01 10:00:00 <==
# cmd: /usr/bin/mamba install -p /p --override-channels -c bioconda samtools>=1.9
==> 2018-01-01 10:00:00 <==
# cmd: conda install jupyter
# install specs: python>=3.5.1,jupyter >=1.0.0,<2.0
"""


def test_update_and_remove_specs_are_applied_in_order_with_the_cmd_line_as_fallback(tmp_path):
    (tmp_path / "conda-meta").mkdir()
    (tmp_path / "conda-meta" / "history").write_text(HISTORY)
    entries = read_history(tmp_path)
    assert [e.tool for e in entries] == ["conda", "conda", "conda", "mamba", "conda"]
    specs, said = requested_from_history(entries)
    assert said
    assert specs == {
        "python": "python>=3.5.1",
        "numtool": "numtool",
        "samtools": "samtools>=1.9",
        "jupyter": "jupyter >=1.0.0,<2.0",
    }


def test_cmd_lines_give_the_package_arguments_only():
    assert cmd_specs(["conda", "create", "-n", "x", "-c", "c", "python", "--yes", "numpy"]) == (
        "update",
        ["python", "numpy"],
    )
    assert cmd_specs(["conda", "remove", "-n", "x", "--all"]) == (None, [])
    assert cmd_specs(["conda", "env", "create", "-f", "e.yml"]) == (None, [])


def test_an_entry_hpcenv_writes_reads_back_as_conda_reads_it():
    text = history_entry(
        added=["conda-forge/linux-64::numtool-1.0-0"],
        removed=["conda-forge/linux-64::libnum-2.0-0"],
        update_specs=["numtool >=1", "hello"],
        remove_specs=["old"],
        argv=["hpcenv", "install", "x", "numtool >=1"],
        when=0,
    )
    lines = text.splitlines()
    assert lines[0].startswith("==> ") and lines[0].endswith(" <==")
    assert lines[1] == "# cmd: hpcenv install x numtool >=1"
    assert "-conda-forge/linux-64::libnum-2.0-0" in lines
    assert "+conda-forge/linux-64::numtool-1.0-0" in lines
    update = next(line for line in lines if line.startswith("# update specs: "))
    assert ast.literal_eval(update.split(": ", 1)[1]) == ["numtool >=1", "hello"]
    assert "# remove specs: ['old']" in lines


def test_channel_names_drop_the_subdir_conda_stores():
    assert channel_short("https://conda.anaconda.org/conda-forge/linux-64", "linux-64") == (
        "conda-forge"
    )
    assert channel_short("file:///data/chan/", "noarch") == "chan"
    assert canonical_channel("https://conda.anaconda.org/conda-forge/") == "conda-forge"
    assert canonical_channel("file:///data/chan/noarch") == "file:///data/chan"
