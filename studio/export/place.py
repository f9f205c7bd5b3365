"""Putting a finished export where downloads come from, so that a crash or a full disk at any moment leaves one
whole export in place (the earlier one or the new one), never a half of each. Merged models and GGUF files alike
are built in a staging folder beside their target, their zip inside it, and moved in by the renames below."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def staging_folder(target: Path) -> Path:
    """A new, hidden folder beside `target` to build an export in."""
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:12]}")
    staging.mkdir(parents=True)
    return staging


def failed_folder(target: Path) -> Path:
    return target.with_name(f"{target.name}-failed-check")


def swap_in(staging: Path, target: Path, zip_path: Path) -> None:
    """Put the finished export in `staging` where `target` is, by renames that each leave one whole export in
    reach: the earlier one goes aside, the new one in, its zip beside it, and only then is the earlier one
    deleted. An error on the way puts the earlier export back; after a crash, the next export's recover does."""
    aside = _aside(target)
    if target.exists():
        target.rename(aside)
    try:
        staging.rename(target)
        if not _move_zip_out(target, zip_path):
            zip_path.unlink(missing_ok=True)  # an earlier export's zip would not match the new folder
    except BaseException:
        if not staging.exists():  # the new folder went in: out again
            target.rename(staging)
        if aside.exists():
            aside.rename(target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def recover(target: Path, zip_path: Path) -> None:
    """Finish a swap_in that a crash cut short. Once the new folder is in, it stays and its zip follows it;
    before that, the earlier export comes back from aside. The only whole copy is never the one deleted."""
    aside = _aside(target)
    if target.exists():
        _move_zip_out(target, zip_path)
        shutil.rmtree(aside, ignore_errors=True)
    elif aside.exists():
        aside.rename(target)


def _move_zip_out(folder: Path, zip_path: Path) -> bool:
    """The new zip is made inside its folder, so that no crash can part them; it moves beside it last."""
    made = folder / zip_path.name
    if not made.exists():
        return False
    made.replace(zip_path)
    return True


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.replaced")  # as older versions named it: theirs come back too
