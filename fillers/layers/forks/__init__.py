"""Layer types of Caffe forks, one module per fork family (SSD, SegNet, PSPNet, R-CNN,
YOLO, the mobile-net ports ...).  Each type's docstring names the fork and the C++ source
whose semantics it follows; ``origin`` says it in ``fill-net --list-layers``.  Fork
parameter messages come from the fork schemas in ``proto/forks/`` (generated into
``*_pb2.py`` here by ``tools/gen_proto.py``).

Every module of this package is imported (and so registers its types) on import.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.endswith("_pb2"):
        importlib.import_module(f"{__name__}.{_info.name}")
