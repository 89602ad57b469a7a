"""Training data: CLINC150 (HF dataset `clinc_oos`, config `plus`, or a local oos-eval JSON) or your own intents.

Your own intents come as a CSV or JSONL file with `text` and `label` columns and an optional `split` column
(train, validation or val, test); see `load_table` for the split made when there is none. `load_data` picks
the loader from the source's extension.
"""

from compression.data.clinc import HF_CONFIG, HF_DATASET, LOCAL_CANDIDATES, default_data_source, load_clinc
from compression.data.splits import ClincData, DataError, Split, read_domains
from compression.data.tables import SPLIT_SEED, TABLE_FORMATS, is_table, load_data, load_table, stratified_split

__all__ = [
    "HF_CONFIG",
    "HF_DATASET",
    "LOCAL_CANDIDATES",
    "SPLIT_SEED",
    "TABLE_FORMATS",
    "ClincData",
    "DataError",
    "Split",
    "default_data_source",
    "is_table",
    "load_clinc",
    "load_data",
    "load_table",
    "read_domains",
    "stratified_split",
]
