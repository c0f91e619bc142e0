# ImageNet-1K k-NN on cached centre-crop features (DINO protocol): cosine similarity, k = 20,
# votes weighted by exp(sim / 0.07). voting='majority' gives plain majority voting.
_base_ = ['./_base_/feature_cache_in1k-224.py']
task = 'imagenet-knn'
protocol_name = 'k-NN, DINO weighted voting (k=20, T=0.07), cached features'
k = 20
temperature = 0.07
voting = 'dino'            # 'dino' (exp(sim/T) weights) or 'majority'
