# Baseline student: the MoCo v3 teacher alone, distilled with the 100-epoch schedule of the CoMAD harness.
#   tools/distill.sh benchmark_configs/baselines/mocov3-only_vit-tiny_8xb512-100e_in1k-224.py 8
# then evaluate the exported student like any other (tools/run_transfer.sh, tools/linear_probe.py).
_base_ = ['../distill/comad-mocov3-only_vit-tiny_8xb512-100e_in1k-224.py']
baseline = dict(name='mocov3-only', kind='distill',
                description='the MoCo v3 teacher alone')
