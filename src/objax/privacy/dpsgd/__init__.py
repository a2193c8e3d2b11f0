"""DP-SGD: private gradients (per-microbatch clipping plus Gaussian noise) and the Rényi-DP accountant."""

from objax.privacy.dpsgd.gradient import PrivateGradValues
from objax.privacy.dpsgd.rdpaccountant import (
                                               analyze_dp,
                                               analyze_dp_sample_without_replacement,
                                               analyze_renyi,
                                               analyze_renyi_sample_without_replacement,
                                               convert_renyidp_to_dp,
)

__all__ = ['PrivateGradValues', 'analyze_dp', 'analyze_dp_sample_without_replacement', 'analyze_renyi',
           'analyze_renyi_sample_without_replacement', 'convert_renyidp_to_dp']
