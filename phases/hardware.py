"""Accelerators the planner sizes for and the MFU meter divides by: one table.

Peaks are dense bf16 tensor-core FLOP/s per device (fp16 where there is no bf16), from the
vendor data sheets. Device names from ``torch.cuda.get_device_name()`` ("NVIDIA H100 80GB
HBM3", "NVIDIA H100 PCIe") are matched against the table's names, longest first, so a
variant's entry wins over its family's.
"""

from __future__ import annotations

from dataclasses import dataclass

from phases.errors import ConfigError


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_gib: float
    bf16: bool
    peak_flops: float | None  # None: no meaningful peak (CPU): no MFU


HARDWARE: dict[str, Hardware] = {
    hw.name: hw
    for hw in (
        Hardware("cpu", 24, False, None),
        Hardware("A100", 80, True, 312e12),
        Hardware("H100", 80, True, 989e12),
        Hardware("H100 PCIe", 80, True, 756e12),
        Hardware("H100 NVL", 94, True, 835e12),
        Hardware("H200", 141, True, 989e12),
        Hardware("L4", 24, True, 121e12),
        Hardware("A10G", 24, True, 125e12),
        Hardware("V100", 32, False, 125e12),
    )
}


def hardware(name: str) -> Hardware:
    """The entry named ``name`` (any case); a :class:`ConfigError` naming the known ones otherwise."""
    for key, hw in HARDWARE.items():
        if key.lower() == name.lower():
            return hw
    raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(HARDWARE)}")


def device_peak_flops(device_name: str | None) -> float | None:
    """The peak of the table's entry whose name the device's name contains (most specific first)."""
    if not device_name:
        return None
    for hw in sorted(HARDWARE.values(), key=lambda h: -len(h.name)):
        if hw.name != "cpu" and hw.name.lower() in device_name.lower():
            return hw.peak_flops
    return None
