"""What the GPUs are doing, through NVML (package nvidia-ml-py); on a machine without one, the process's memory."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from .messages import Message
from .workspace import append_jsonl

_GB = 2**30


def _nvml():
    """The initialised pynvml module; an error where there is no NVIDIA driver, or NVML fails."""
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def list_gpus() -> list[dict]:
    """[{index, name, total_gb, free_gb}] for every NVIDIA GPU NVML sees; empty without one."""
    return survey_gpus()[0]


def survey_gpus() -> tuple[list[dict], Message | None]:
    """The GPUs NVML sees, and why it sees none on a machine that has some: None where all is well, or where
    there is simply no NVIDIA GPU. Told apart, so a broken driver never quietly turns the studio to the CPU."""
    try:
        return _read_gpus(_nvml()), None
    except Exception as e:  # noqa: BLE001 - no library, no driver, a GPU fallen off the bus: NVML fails many ways
        if not _machine_has_nvidia_gpus():
            return [], None
        return [], Message("The studio cannot see this machine's NVIDIA GPUs: NVML failed ({error}). Until the "
                           "administrator mends the driver (nvidia-smi shows whether it works) and restarts the "
                           "studio, runs that ask for GPUs are refused and other runs train one at a time, perhaps "
                           "on the CPU.", error=f"{type(e).__name__}: {e}")


def _machine_has_nvidia_gpus() -> bool:
    """What shows NVIDIA GPUs without NVML: the driver's device files, or its nvidia-smi."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def _read_gpus(nvml) -> list[dict]:
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
        gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                     "total_gb": round(memory.total / _GB, 2), "free_gb": round(memory.free / _GB, 2),
                     "used_gb": round(_used_bytes(nvml, handle, memory) / _GB, 2), "util": _utilisation(nvml, handle)})
    return gpus


def _used_bytes(nvml, handle, memory) -> int:
    """Memory in use as nvidia-smi counts it: NVML's first query counts what the driver reserves as used too
    (0.6 GB on an idle H200), its v2 query does not."""
    try:
        return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2).used
    except Exception:  # noqa: BLE001 - a driver older than the v2 query
        return memory.used


def _utilisation(nvml, handle) -> int | None:
    """The share of the last sample period the GPU was busy, in percent; None where the board does not say."""
    try:
        return nvml.nvmlDeviceGetUtilizationRates(handle).gpu
    except Exception:  # noqa: BLE001 - some boards (and MIG slices) do not report it
        return None


def _process_tree_rss_gb(pid: int) -> float:
    """Resident memory of a process and its children, from /proc (Linux)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if status.parent.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return round(total / _GB, 3)


class MemorySampler:
    """Appends one line a second to gpu.jsonl while a training child runs."""

    def __init__(self, path: Path, pid: int, gpu_indices: list[int] | None = None, every: float = 1.0):
        self.path, self.pid, self.every = Path(path), pid, every
        self.gpu_indices = gpu_indices
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"memory-sampler-{pid}", daemon=True)

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        try:
            nvml = _nvml()
        except Exception:  # noqa: BLE001 - no NVIDIA GPU here (or none NVML can see: the job queue says so)
            nvml = None
        if nvml is None:
            append_jsonl(self.path, {"event": "no-gpu", "time": time.time(),
                                     "message": "No NVIDIA GPU here: recording the training process's memory instead."})
        while not self._stop.is_set():
            try:
                for sample in (self._gpu_samples(nvml) if nvml else [self._process_sample()]):
                    append_jsonl(self.path, sample)
            except FileNotFoundError:  # the run was deleted as its process ended: nobody left to record for
                return
            self._stop.wait(self.every)

    def _process_sample(self) -> dict:
        return {"time": time.time(), "device": "cpu", "used_gb": _process_tree_rss_gb(self.pid)}

    def _gpu_samples(self, nvml) -> list[dict]:
        indices = self.gpu_indices if self.gpu_indices else range(nvml.nvmlDeviceGetCount())
        samples = []
        for i in indices:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            sample = {"time": time.time(), "device": f"cuda:{i}", "used_gb": round(memory.used / _GB, 3),
                      "total_gb": round(memory.total / _GB, 2)}
            for key, read in (("util", lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                              ("temp_c", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                              ("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000)):
                try:
                    sample[key] = read()
                except Exception:  # noqa: BLE001 - some boards do not report every sensor
                    pass
            samples.append(sample)
        return samples
