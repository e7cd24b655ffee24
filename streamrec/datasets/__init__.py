"""Real public interaction logs -> the sequences the encoder trains and evaluates on.

One adapter per file format (``formats``), a registry of the named datasets under the shared data
directory (``registry``), and the in-memory result (``Dataset``). Adapters stream ``Interaction``
records in file order, so replay can read the same files without materialising them.
"""

from streamrec.datasets.base import Dataset, Interaction
from streamrec.datasets.registry import DATASETS, DatasetSpec, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "Interaction", "load_dataset"]
