"""The bundled scikit-learn digits as diffusion training images.

The loader lives in the product (``hfaudit.digits``: benign fidelity's reference data is the same
images); the trainers import it from here.
"""

from __future__ import annotations

from hfaudit.digits import load_digits_images

__all__ = ["load_digits_images"]
