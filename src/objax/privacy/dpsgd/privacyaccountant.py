"""Objax 1.8 module path `objax.privacy.dpsgd.privacyaccountant`: the Rényi-DP accountant (see rdpaccountant)."""

from objax.privacy.dpsgd.rdpaccountant import (
                                               analyze_dp,
                                               analyze_dp_sample_without_replacement,
                                               analyze_renyi,
                                               analyze_renyi_sample_without_replacement,
                                               convert_renyidp_to_dp,
)

__all__ = ['analyze_dp', 'analyze_dp_sample_without_replacement', 'analyze_renyi',
           'analyze_renyi_sample_without_replacement', 'convert_renyidp_to_dp']
