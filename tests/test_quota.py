"""Home's quota from `quota -s` output as quota-tools prints it."""

from __future__ import annotations

from pathlib import Path

from hpcenv import quota

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


def test_quota_output_of_a_local_disk_gives_space_and_files_with_their_limits():
    [line] = quota.parse_quota(QUOTA_LOCAL)
    assert line.filesystem == "/dev/sda2"
    assert (line.used_bytes, line.soft_bytes, line.hard_bytes) == (4301 * MiB, 10 * GiB, 11 * GiB)
    assert (line.files, line.files_soft, line.files_hard) == (102_000, 200_000, 250_000)
    assert line.space_grace is None and line.files_grace is None


def test_quota_output_with_wrapped_device_names_keeps_each_user_filesystem_only():
    home, scratch = quota.parse_quota(QUOTA_NFS_WRAPPED)
    assert home.filesystem == "nfs01.cluster.example:/export/home"
    assert home.used_bytes == 10300 * MiB and home.soft_bytes == 10 * GiB
    assert home.space_grace == "6days"
    assert (home.files, home.files_soft, home.files_hard) == (5210, 0, 0)
    assert scratch.filesystem == "/dev/mapper/vg-scratch"
    assert scratch.used_bytes == 28 * 1024 and scratch.files == 7
    # the group section (900G on /dev/sda2) is not the user's quota


def test_quota_output_without_limits_or_units_or_grace():
    assert quota.parse_quota(QUOTA_NONE) == []
    assert quota.parse_quota("") == []
    [blocks] = quota.parse_quota(QUOTA_BLOCKS)
    assert blocks.used_bytes == 4404224 * 1024 and blocks.soft_bytes == 10 * GiB
    assert blocks.files_soft == 100_000
    [hard] = quota.parse_quota(QUOTA_HARD_NO_GRACE)
    assert hard.used_bytes == 11 * GiB and hard.space_grace is None
    assert hard.files == 200_000 and hard.files_grace == "none"


def test_home_quota_row_is_found_by_the_device_of_homes_mount():
    mounts = (
        "/dev/sda1 / ext4 rw 0 0\n"
        "nfs01.cluster.example:/export/home /home nfs4 rw 0 0\n"
        "/dev/mapper/vg-scratch /scratch\\040space xfs rw 0 0\n"
    )
    rows = quota.parse_quota(QUOTA_NFS_WRAPPED)
    device = quota.mount_device(Path("/home/bob"), mounts)
    assert device == "nfs01.cluster.example:/export/home"
    assert quota.quota_for(rows, device).used_bytes == 10300 * MiB
    assert quota.mount_device(Path("/scratch space/x"), mounts) == "/dev/mapper/vg-scratch"
    assert quota.quota_for(rows, "/dev/sda1") is None
    assert quota.quota_for(quota.parse_quota(QUOTA_LOCAL), None).filesystem == "/dev/sda2"
