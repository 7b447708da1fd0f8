"""The model zoo's Python side: weight-import tables for pretrained PyTorch models
(:mod:`.mappings`) and the conversion behind ``deeplab-convert --from`` (:mod:`.convert`).
The networks themselves are netdefs under ``netdef/``."""
