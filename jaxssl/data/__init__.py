"""Input data: real datasets as random-access sources, augmentations, Grain pipelines."""

from jaxssl.data.augment import Deterministic
from jaxssl.data.augment import SimCLRAugment
from jaxssl.data.augment import TwoViews
from jaxssl.data.datasets import DatasetInfo
from jaxssl.data.datasets import EMBEDDED_NAMES
from jaxssl.data.datasets import default_data_dir
from jaxssl.data.datasets import get_info
from jaxssl.data.datasets import get_source
from jaxssl.data.datasets import prepare
from jaxssl.data.pipeline import eval_num_batches
from jaxssl.data.pipeline import global_batch
from jaxssl.data.pipeline import make_eval_batches
from jaxssl.data.pipeline import make_train_dataset
from jaxssl.data.pipeline import make_train_iterator
