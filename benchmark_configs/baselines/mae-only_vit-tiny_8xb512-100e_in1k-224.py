# Baseline student: the MAE teacher alone (keep 0.50), distilled with the 100-epoch schedule of the CoMAD harness.
#   tools/distill.sh benchmark_configs/baselines/mae-only_vit-tiny_8xb512-100e_in1k-224.py 8
# then evaluate the exported student like any other (tools/run_transfer.sh, tools/linear_probe.py).
_base_ = ['../distill/comad-mae-only_vit-tiny_8xb512-100e_in1k-224.py']
baseline = dict(name='mae-only', kind='distill',
                description='the MAE teacher alone (keep 0.50)')
