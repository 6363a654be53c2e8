"""The Dump as a data type: reading a Dump folder or a seed ``.pt`` (:func:`load_dump`), wrapping arrays
(:meth:`Dump.from_arrays`), streaming rows, and the checks on Dumps analysed as a pair. Analyses use this floor and
never the extractor; writing and resuming an extraction stay in :mod:`repanalysis.extract`."""
from repanalysis.dump.dump import ARRAY_NAMES, FORMAT, VERSION, Dump, integral_labels, load_dump, release_pages

__all__ = ["ARRAY_NAMES", "FORMAT", "VERSION", "Dump", "integral_labels", "load_dump", "release_pages"]
