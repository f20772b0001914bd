"""What the command line makes of a failure: one line and an exit code per kind of exception (pure), including
the errors that come back from data-loader and process-pool workers."""

import errno
import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from rein_cli.cli import advice_for
from rein_cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, Failure, Interrupted, ReinError, explain
from rein_cli.parallel import parallel_map


def test_a_rein_error_is_its_own_message():
    assert explain(ReinError('unknown dataset "x"; known: a, b')) == Failure('unknown dataset "x"; known: a, b')


def test_ctrl_c_is_one_line_and_exit_130_with_the_way_on_of_the_command_or_of_the_work():
    assert explain(KeyboardInterrupt()) == Failure("interrupted; run the same command again", EXIT_INTERRUPTED)
    data = "interrupted; run the same command again: a download or a preparation goes on where it stopped"
    assert explain(KeyboardInterrupt(), advice_for("data")) == Failure(data, EXIT_INTERRUPTED)
    again = "continue the run with `rein train --resume runs/x` (from its checkpoint of iteration 2)"
    assert explain(Interrupted(again), advice_for("train")) == Failure(f"interrupted; {again}", EXIT_INTERRUPTED)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_a_full_disk_or_file_size_limit_names_the_file_and_what_to_free(code):
    failure = explain(OSError(code, os.strerror(code), "/runs/r/checkpoints/last/model.safetensors"))
    assert failure.code == EXIT_ERROR and not failure.bug
    assert failure.message == (
        f"cannot write /runs/r/checkpoints/last/model.safetensors: the disk or the file-size limit is full "
        f"({os.strerror(code)}); free space there (`df -h`; `ulimit -f` shows the file-size limit) and run the same "
        "command again"
    )
    assert explain(OSError(code, os.strerror(code))).message.startswith("cannot write: the disk or the file-size")


@pytest.mark.parametrize(
    ("code", "filename", "message"),
    [
        (errno.EACCES, "/data/out", "cannot write or read /data/out (Permission denied); fix its permissions or "),
        (errno.EPERM, "/sys/x", "cannot write or read /sys/x (Operation not permitted); fix its permissions or "),
        (errno.ENOENT, "/data/in.png", "not found: /data/in.png; check the path"),
        (errno.EROFS, "/mnt/ro/run", "cannot write /mnt/ro/run: it is on a read-only file system; choose a writable"),
        (errno.EMFILE, None, "too many open files (Too many open files); raise `ulimit -n` or use fewer --workers"),
        (errno.ENOTDIR, "/a/file/run", "/a/file/run: a part of this path is a file, not a folder; choose another"),
        (errno.EIO, "/disk/x", "Input/output error: /disk/x; check the path and run the same command again"),
    ],
)
def test_each_errno_says_what_failed_and_what_to_do(code, filename, message):
    failure = explain(OSError(code, os.strerror(code), filename), advice_for("data"))
    assert failure.message.startswith(message) and failure.code == EXIT_ERROR and not failure.bug


def test_too_many_open_files_in_training_names_the_loader_workers():
    assert (
        "use fewer data.num_workers"
        in explain(OSError(errno.EMFILE, "Too many open files"), advice_for("train")).message
    )


def test_a_library_io_error_with_an_os_error_code_is_a_full_disk():
    err = Exception("Error while serializing: I/O error: File too large (os error 27)")  # safetensors' own type
    assert explain(err).message.startswith("cannot write: the disk or the file-size limit is full (File too large)")


def test_out_of_gpu_memory_names_the_settings_to_lower():
    message = "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which..."
    failure = explain(torch.OutOfMemoryError(message), advice_for("train"))
    assert failure == Failure(
        "out of GPU memory (CUDA out of memory. Tried to allocate 20.00 GiB); lower data.batch_size (--batch-size) or "
        "model.crop_size (--set model.crop_size=...), or run on the CPU with --device cpu"
    )
    assert (
        "use --mode slide (crop-sized windows) rather than --mode whole"
        in explain(torch.OutOfMemoryError(message), advice_for("eval")).message
    )
    assert "a smaller --size" in explain(RuntimeError("CUDA error: out of memory"), advice_for("predict")).message


def test_out_of_host_memory_names_the_settings_to_lower():
    assert explain(MemoryError(), advice_for("train")) == Failure(
        "out of memory (RAM); lower data.batch_size (--batch-size) or model.crop_size (--set model.crop_size=...) "
        "or data.num_workers, or close other programs"
    )
    assert (
        explain(MemoryError(), advice_for("data")).message
        == "out of memory (RAM); use fewer --workers, or close other programs"
    )
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried...")
    assert explain(cpu, advice_for("eval")).message.startswith("out of memory (RAM); use --mode slide")
    assert explain(OSError(errno.ENOMEM, "Cannot allocate memory")).message.startswith("out of memory (RAM); lower")


def test_dead_workers_say_what_to_lower():
    from concurrent.futures.process import BrokenProcessPool

    died = RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
    assert "lower data.num_workers or data.batch_size" in explain(died, advice_for("train")).message
    broken = BrokenProcessPool("A process in the process pool was terminated abruptly")
    assert "run the same command again with fewer --workers" in explain(broken, advice_for("data")).message


def test_anything_else_is_a_bug_with_its_traceback():
    failure = explain(ValueError("shapes (3,) and (4,) differ\nmore"), advice_for(None))
    assert failure.bug and failure.code == EXIT_ERROR
    assert failure.message == (
        "bug in rein: ValueError: shapes (3,) and (4,) differ; please report it with its traceback "
        "(rerun with --debug for the full report)"
    )
    assert explain(OSError("cannot identify image file")).bug  # no errno: not the operating system's
    assert explain(KeyError("x")).bug


class Failing(Dataset):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        try:
            raise OSError(errno.EIO, "Input/output error", "/data/a.png")
        except OSError as cause:
            raise self.error from cause  # a chained traceback in the worker, as reading a file gives


def from_loader_worker(error: BaseException) -> BaseException:
    with pytest.raises(BaseException) as caught:
        next(iter(DataLoader(Failing(error), num_workers=1)))
    return caught.value


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ReinError("cannot read image /data/a.png: truncated; replace or remove the file"), None),
        (OSError(errno.ENOSPC, "No space left on device", "/data/cache/x"), "cannot write /data/cache/x: the disk or"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/a.png"), "cannot write or read /data/a.png"),
        (MemoryError(), "out of memory (RAM); lower data.batch_size"),
    ],
)
def test_errors_from_a_data_loader_worker_keep_their_meaning(error, message):
    wrapped = from_loader_worker(error)
    assert "Traceback" in str(wrapped)  # torch re-creates the exception from the worker's formatted traceback
    failure = explain(wrapped, advice_for("train"))
    assert not failure.bug and failure.message.startswith(message or str(error)), failure.message
    assert "\n" not in failure.message


def test_a_bug_in_a_data_loader_worker_says_where():
    failure = explain(from_loader_worker(ValueError("bad index")))
    assert failure.bug and failure.message.startswith("bug in rein (in DataLoader worker process 0): ValueError: bad")


def raise_for(item: int) -> int:
    if item == 3:
        raise ReinError("label /data/3.png has values outside the dataset's ids; use --allow-unknown")
    if item == 5:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/labels/5.png")
    return item


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([1, 2, 3, 4], "label /data/3.png has values outside the dataset's ids; use --allow-unknown"),
        ([1, 2, 5, 4], "cannot write /data/labels/5.png: the disk or the file-size limit is full"),
    ],
)
def test_errors_from_a_process_pool_worker_keep_their_meaning(tasks, message):
    with pytest.raises(Exception) as caught:
        parallel_map(raise_for, tasks, workers=2, progress=False)
    failure = explain(caught.value, advice_for("data"))
    assert not failure.bug and failure.message.startswith(message)
