"""Utilities."""

from objax.util import check, image
from objax.util.conversion import to_interpolate, to_padding, to_tuple
from objax.util.display import summary
from objax.util.multihost import (
                                  gather_to_host,
                                  get_local_devices,
                                  make_global_batch,
                                  map_to_device,
                                  multi_host_barrier,
                                  process_count,
                                  process_index,
)
from objax.util.objax2tf import Objax2Tf
from objax.util.renamer import Renamer
from objax.util.signature import (
                                  args_indexes,
                                  local_kwargs,
                                  override_args_kwargs,
                                  positional_args_names,
                                  re_sign,
                                  repr_function,
)
from objax.util.training_run import TrainingRun
from objax.util.util import EasyDict, class_name, dummy_context_mgr, find_used_variables, ilog2

__all__ = ['Renamer', 'summary', 'TrainingRun']
__all__ += ['to_interpolate', 'to_padding', 'to_tuple', 'check']
__all__ += ['image', 'Objax2Tf', 'args_indexes', 'local_kwargs', 'override_args_kwargs', 'positional_args_names',
            're_sign', 'repr_function', 'EasyDict', 'class_name', 'dummy_context_mgr', 'find_used_variables',
            'ilog2']
__all__ += ['gather_to_host', 'get_local_devices', 'make_global_batch', 'map_to_device', 'multi_host_barrier',
            'process_count', 'process_index']
