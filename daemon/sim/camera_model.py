"""A scientific camera: photons in, digital numbers out.

``electrons = QE × photons`` with Poisson shot noise, plus Gaussian read noise,
clipped at the full-well capacity, then ``ADU = offset + gain × electrons``
rounded and clipped to the bit depth. Shot noise is exact Poisson where the
expected count is small (dark-field, single molecules) and the Gaussian
approximation ``N(μ, μ + σ_read²)`` above :data:`POISSON_LIMIT`, where the two
are indistinguishable; the Gaussian draws come from a pre-drawn bank read at a
random offset per frame so a 512×512 frame costs about a millisecond of noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CameraModel", "POISSON_LIMIT"]

#: Expected electron counts above which shot noise is drawn as a Gaussian.
POISSON_LIMIT = 30.0
_BANK_SIZE = 1 << 23  # 8 Mi float32 = 32 MiB


@dataclass
class CameraModel:
    quantum_efficiency: float = 0.8
    read_noise_e: float = 1.6
    gain_adu_per_e: float = 0.5
    offset_adu: float = 100.0
    bit_depth: int = 16
    full_well_e: float = 30000.0
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._bank = self._rng.standard_normal(_BANK_SIZE, dtype=np.float32)

    @property
    def max_adu(self) -> int:
        return (1 << self.bit_depth) - 1

    def _normal(self, n: int) -> np.ndarray:
        if n > _BANK_SIZE // 2:
            return self._rng.standard_normal(n, dtype=np.float32)
        start = int(self._rng.integers(0, _BANK_SIZE - n))
        return self._bank[start : start + n]

    def expose(self, photons: np.ndarray, out: np.ndarray | None = None, noise: bool = True) -> np.ndarray:
        """Turn an expected-photon map into a uint16 frame (written into ``out``).

        ``noise=False`` gives the expected digital numbers (no shot or read noise).
        """
        e = np.multiply(photons, np.float32(self.quantum_efficiency), dtype=np.float32)
        np.maximum(e, 0, out=e)
        if noise:
            mean_e = e.copy()
            z = self._normal(e.size).reshape(e.shape)
            # Gaussian branch everywhere: e = μ + sqrt(μ + σ²)·z
            e += np.float32(self.read_noise_e**2)
            np.sqrt(e, out=e)
            e *= z
            e += mean_e
            low = mean_e < POISSON_LIMIT
            if low.any():  # exact Poisson + read noise where the count is small
                e[low] = self._rng.poisson(mean_e[low]).astype(np.float32) + np.float32(self.read_noise_e) * z[low]
        gain = np.float32(self.gain_adu_per_e)
        # the full well caps the charge; read noise is symmetric about the offset (that is what the offset is
        # for), so a dark pixel may read below it: only the ADC's range clips below (at 0 ADU)
        np.minimum(e, np.float32(self.full_well_e), out=e)
        e *= gain
        e += np.float32(self.offset_adu) + np.float32(0.5)  # +0.5 then truncation = rounding
        np.clip(e, 0, self.max_adu, out=e)
        if out is None:
            out = np.empty(e.shape, np.uint16)
        np.copyto(out, e, casting="unsafe")
        return out
