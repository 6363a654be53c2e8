"""Extraction under ``torchrun``: each rank extracts its contiguous shard, rank 0 merges them into one Dump.

``torchrun --nproc_per_node=G [--nnodes ...] -m repanalysis extract ...`` starts G processes per machine with
RANK / WORLD_SIZE / LOCAL_RANK in their environment; :func:`launched` reads them. torch.distributed is only the
engine: the process group (NCCL for CUDA tensors, gloo for the CPU tensors of the few control messages here) is
used for barriers and to agree on failures; the rows travel through the file system. Rank r writes shard r of
WORLD_SIZE (``extract(..., shard=(r, WORLD_SIZE))``: whole batches of the single-process run, so no padding and no
duplicated sample) to ``<output>.shards/rank-r-of-W``; once every rank is done, rank 0 merges the shards into
``output`` (:func:`repanalysis.extract.merge.merge_dumps`) and removes them. The Dump is the one a single process
makes (same rows, values, order and meta, apart from timing and ``merged_from``, which records the ranks).

A rank that dies leaves its shard resumable (committed every few seconds; torchrun's SIGTERM to the other ranks
is turned into an interrupt, so they commit what they finished); re-running the same command resumes every
shard and extracts only the missing rows. The output's folder must be one all ranks see (a shared file system
across nodes): this is checked before anything is extracted. Without one, run ``extract --shard i/n`` on each
machine and ``merge-dumps``.
"""
from __future__ import annotations

import contextlib
import os
import signal
import uuid
from datetime import timedelta
from pathlib import Path

import torch

from repanalysis.errors import DumpError, RepanalysisError
from repanalysis.paths import as_path

# a rank that finishes early waits at a barrier for the slowest one; a resumed run can be very uneven
TIMEOUT = timedelta(hours=24)


def launched() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when this process is one of several started by torchrun, else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise RepanalysisError("WORLD_SIZE is set but RANK / LOCAL_RANK are missing or not integers; expected "
                               "the environment torchrun gives each process") from None


def shards_folder(output: str | os.PathLike) -> Path:
    """Where the ranks of a torchrun extraction into ``output`` write their shards."""
    output = Path(output)
    return output.with_name(output.name + ".shards")


def rank_device(device: str, local_rank: int) -> str:
    """The device of this rank: ``cuda:<local rank>`` when CUDA is asked for (or ``auto`` finds it), else as given."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


@contextlib.contextmanager
def _sigterm_interrupts():
    """torchrun stops the other ranks with SIGTERM when one dies: raise KeyboardInterrupt instead of dying at
    once, so the extraction's ``finally`` commits the rows it finished (SIGKILL still loses the last few
    seconds, which a resumed run re-does)."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:               # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def extract_distributed(model, data, output: str | os.PathLike, *, device: str = "auto", overwrite: bool = False,
                        log=None, progress: bool = True, **kwargs):
    """:func:`repanalysis.extract.runner.extract` as one rank of a torchrun run (see the module docstring).

    Every rank calls it with the same arguments. Returns the merged Dump on rank 0 and None on the other ranks.
    An error on any rank stops every rank: that rank raises its own error, the others a RepanalysisError
    naming the failed ranks; the shards finished so far stay and a re-run resumes them.
    """
    import torch.distributed as dist

    from repanalysis.extract.merge import merge_dumps
    from repanalysis.extract.runner import extract

    where = launched()
    if where is None:
        raise RepanalysisError("extract_distributed runs under torchrun (WORLD_SIZE > 1); expected `torchrun "
                               "--nproc_per_node=G -m repanalysis extract ...`")
    rank, world, local_rank = where
    output = as_path(output, "output")
    dev = rank_device(device, local_rank)
    cuda = dev.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(dev))
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    shards = shards_folder(output)
    me = shards / f"rank-{rank}-of-{world}"
    quiet = rank != 0
    try:
        with _sigterm_interrupts():
            # 1. rank 0 checks the output and lays out the shards' folder; every rank must see it
            token = _agree(dist, rank, world, lambda: _prepare(output, shards, overwrite) if rank == 0 else None)
            token = _broadcast_text(dist, token)
            _agree(dist, rank, world, lambda: _check_visible(shards, token))
            # 2. each rank its shard (resumed when a killed run left it)
            _agree(dist, rank, world, lambda: extract(
                model, data, me, shard=(rank, world), device=dev, reuse=True, overwrite=overwrite,
                log=None if quiet else log, progress=progress and not quiet, **kwargs))
            # 3. rank 0 merges; the others wait for it
            merged = _agree(dist, rank, world, lambda: merge_dumps(
                [shards / f"rank-{r}-of-{world}" for r in range(world)], output, overwrite=overwrite,
                remove_shards=True, log=log) if rank == 0 else None)
            if rank == 0:
                with contextlib.suppress(OSError):
                    (shards / _TOKEN).unlink()
                    shards.rmdir()
            return merged
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


_TOKEN = ".ranks"


def _prepare(output: Path, shards: Path, overwrite: bool) -> str:
    """Rank 0, before any extraction: refuse an output that exists as a complete Dump (or anything but an
    unfinished merge) unless ``overwrite``, make the shards' folder and write a token every rank must read."""
    from repanalysis.extract.store import _read_meta

    if output.exists() and not overwrite:
        meta = _read_meta(output) if output.is_dir() else None
        unfinished = meta is not None and not meta.get("complete")
        if not unfinished and (output.is_file() or any(output.iterdir())):
            raise DumpError(f"output {output} already exists; pass --overwrite to replace it")
    shards.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    (shards / _TOKEN).write_text(token)
    return token


def _check_visible(shards: Path, token: str) -> str:
    try:
        seen = (shards / _TOKEN).read_text()
    except OSError:
        seen = None
    if seen != token:
        raise DumpError(f"{shards}, made by rank 0, is not visible here: the ranks do not share the output's file "
                        "system; expected an --output on a file system every node mounts, or run `repanalysis "
                        "extract --shard i/n` on each machine and `repanalysis merge-dumps`")
    return token


def _broadcast_text(dist, text: str | None) -> str:
    box = [text]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def _agree(dist, rank: int, world: int, step):
    """Run ``step`` on this rank, then agree with every rank on whether all succeeded: the failed rank re-raises
    its error, the others raise one naming the failed ranks (so no rank waits forever at the next barrier)."""
    error, value = None, None
    try:
        value = step()
    except BaseException as exc:          # an interrupt too: the other ranks must not wait for this one
        error = exc
    flags = torch.zeros(world, dtype=torch.int32)
    flags[rank] = int(error is not None)
    try:
        dist.all_reduce(flags)
    except Exception:                      # the group itself is gone (a rank died): this rank's own outcome
        if error is not None:
            raise error
        raise
    if error is not None:
        raise error
    failed = flags.nonzero().flatten().tolist()
    if failed:
        names = ", ".join(str(r) for r in failed)
        raise RepanalysisError(f"rank{'s' if len(failed) > 1 else ''} {names} failed (see {'their' if len(failed) > 1 else 'its'} "
                               "message); the shards finished so far are kept: re-run the same command to resume")
    return value
