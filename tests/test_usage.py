"""`hpcenv usage` on real envs built from the demo channel, with real hardlinks."""

from __future__ import annotations

import os

from tests.channels import pkgs, prefix, result_of
from tests.fs import hpcenv_ok as ok

MiB = 1024**2


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
