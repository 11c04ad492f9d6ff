"""Channel names as the user gives them, to the URLs the engine reads.

`conda-forge` is the channel alias plus the name (or its mirror), a URL stays a URL (or its
mirror), and a path (relative or not) becomes an absolute file:// URL, so an env's record
means the same from any directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hpcenv.settings import Settings


def normalize_channel(channel: str) -> str:
    """A channel given as a path (relative or not) becomes an absolute file:// URL."""
    if channel.startswith(("/", "./", "../", "~")) or channel in (".", ".."):
        return Path(os.path.expanduser(channel)).resolve().as_uri()
    return channel


def channel_urls(settings: Settings, channels: Sequence[str]) -> list[str]:
    """Channel names to URLs: mirrors first, then the channel alias; paths to file:// URLs."""
    urls = []
    for channel in channels or settings.channels:
        if channel in settings.mirrors:
            urls.append(settings.mirrors[channel])
        elif "://" in channel:
            urls.append(settings.mirrors.get(channel, channel))
        elif channel.startswith(("/", ".", "~")):
            urls.append(normalize_channel(channel))
        else:
            urls.append(f"{settings.channel_alias.rstrip('/')}/{channel}")
    return urls
