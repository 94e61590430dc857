"""Calorimeter super-resolution: PbWO4 ECAL showers (photon vs pi0), 6x6 LR -> 24x24 HR (Erdmann et al., EPJC 83 (2023) 1001)."""
