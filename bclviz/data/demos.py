"""Builders of the demo datasets that share a generic one: digits and Fashion-MNIST.

:func:`bclviz.data.images.image_bcl_data` builds both from its first argument; the
registry (:mod:`bclviz.data.registry`) names one builder per dataset, so each gets the
name bound here. Their keyword options are those of ``image_bcl_data``. (toy and glyphs
are registered with their own builders, :func:`bclviz.data.toy.make_toy` and
:func:`bclviz.data.glyphs.make_glyphs`.)
"""

from __future__ import annotations

import functools

from bclviz.data.images import image_bcl_data

__all__ = ["digits_data", "fashion_mnist_data"]

#: scikit-learn's 8x8 digits: ``image_bcl_data("digits", seed=..., **options)``
digits_data = functools.partial(image_bcl_data, "digits")
#: Fashion-MNIST from a local copy: ``image_bcl_data("fashion-mnist", seed=..., **options)``
fashion_mnist_data = functools.partial(image_bcl_data, "fashion-mnist")
