"""DROPZONE_JSON_V1's filesystem mode: an org writes only inside its own folder.

Every org's paths resolve inside ``<ISSUER_ERP_DROPZONE_ROOT>/<org_id>/``, the
org's folder. The issuer creates that folder, mode 0700, the first time a
filesystem connection of the org is tested or pushes an order, and never changes
a folder that exists (an operator whose ERP reads as another user creates it
beforehand, with the mode or ACL that reader needs).

An org's path names a folder inside its own: a leading ``/`` is the org's folder
itself, as in an SFTP chroot. These are refused whatever lies on disk (the rules
are lexical, so the answer never depends on what exists outside the org's
folder): ``.`` and ``..`` components, backslashes, percent-encoded bytes (never
decoded, so ``%2e%2e`` would not mean what it seems to), control and invisible
characters, and any text that NFKC normalisation changes (full-width dots and
slashes U+FF0E and U+FF0F, the two-dot leader U+2025, ligatures, decomposed
accents).

At use, the path is opened one component at a time from a descriptor of the root:
each ``openat`` is relative to the directory opened before it and has
``O_NOFOLLOW | O_DIRECTORY``; files are created with ``O_CREAT | O_EXCL |
O_NOFOLLOW`` in the last directory and renamed with ``linkat`` inside it. So no
symbolic link below the root is ever followed (one placed in an org's folder, by
anyone, makes the path "not found"; the operator may make the root itself a link
or mount point, and bind-mount an org's folder from elsewhere), and as no name is
looked up twice, swapping a directory for a link between two steps cannot lead
out of the folder either.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o640
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
#: Control, format (zero-width, bidirectional overrides, BOM), surrogate, private-use,
#: unassigned, line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: An org id names its folder: the id pattern of the admin API, minus "." and "..".
_ORG_ID = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.:-]{1,64}$")


class FolderRefused(Exception):
    """The org's path leads through something that is not a directory of its folder
    (a symbolic link, a file). The text, for the operator, names it below the root;
    the org is told "not found"."""


def components(path: str) -> tuple[str, ...]:
    """The names of ``path`` below an org's folder (empty: the folder itself);
    ValueError, with the reason an org can act on, for a path the rules refuse."""
    parts = tuple(part for part in path.split("/") if part)
    for part in parts:
        if part in (".", ".."):
            raise ValueError("'.' and '..' are not allowed: the path is inside the org's "
                             "folder")
        if "\\" in part:
            raise ValueError("backslashes are not allowed (the separator is /)")
        if _PERCENT_ENCODED.search(part):
            raise ValueError("percent-encoding is not decoded: write the characters "
                             "themselves")
        if any(unicodedata.category(char) in _INVISIBLE
               or (unicodedata.category(char) == "Zs" and char != " ") for char in part):
            raise ValueError("control and invisible characters are not allowed")
        if unicodedata.normalize("NFKC", part) != part:
            raise ValueError("characters that stand for others (NFKC) are not allowed, e.g. "
                             "full-width forms")
    return parts


@contextlib.contextmanager
def open_folder(root: Path, org_id: str, parts: Sequence[str], *, create: bool
                ) -> Iterator[int]:
    """A descriptor of ``<root>/<org_id>/<parts...>``, reached without following a
    symbolic link; ``create`` makes the org's folder (0700) when it is missing.

    ``FileNotFoundError`` when a component is missing, :class:`FolderRefused` when
    one is a link or not a directory."""
    if not _ORG_ID.match(org_id):
        raise FolderRefused(f"org id {org_id!r} cannot name a folder")
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(org_id, FOLDER_MODE, dir_fd=descriptor)
        for depth, name in enumerate((org_id, *parts)):
            parent = descriptor
            try:
                descriptor = os.open(name, _DIRECTORY, dir_fd=parent)
            except NotADirectoryError:
                where = "/".join((org_id, *parts[:depth], name))
                raise FolderRefused(f"{where} is a {_kind(name, parent)}, not a directory "
                                    "(links are not followed)") from None
            os.close(parent)
        yield descriptor
    finally:
        os.close(descriptor)


def write(root: Path, org_id: str, parts: Sequence[str], name: str, data: bytes, *,
          atomic: bool) -> None:
    """Create ``name`` (never replacing anything) in the org's folder ``parts`` with
    ``data``, durably; with ``atomic`` under a hidden temporary name first."""
    with open_folder(root, org_id, parts, create=True) as folder:
        if not atomic:
            _write_file(folder, name, data)
            return
        temporary = f".{name}.{secrets.token_hex(4)}.tmp"
        _write_file(folder, temporary, data)
        try:  # atomic, and refuses to replace an existing name (a link included)
            os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder,
                    follow_symlinks=False)
        finally:
            os.unlink(temporary, dir_fd=folder)
        os.fsync(folder)  # the new name is durable too


def remove(root: Path, org_id: str, parts: Sequence[str], name: str) -> None:
    with open_folder(root, org_id, parts, create=False) as folder:
        os.unlink(name, dir_fd=folder)


def _write_file(folder: int, name: str, data: bytes) -> None:
    descriptor = os.open(name, _NEW_FILE, FILE_MODE, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder)
        raise


def _kind(name: str, folder: int) -> str:
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except OSError:
        return "vanished entry"
    return "symbolic link" if stat.S_ISLNK(mode) else "file"
