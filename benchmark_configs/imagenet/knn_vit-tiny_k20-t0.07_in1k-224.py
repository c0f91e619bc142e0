# ImageNet-1K k-NN on cached centre-crop features (DINO protocol, eval_knn.py): cosine similarity, the
# k = 20 nearest training samples vote with weight exp(sim / 0.07); voting='majority' gives plain
# majority voting. Nothing is trained: the task runs Runner.test() over the validation features.
_base_ = ['./_base_/default_runtime.py', './_base_/datasets/imagenet_features_centre-crop-224.py']
task = 'imagenet-knn'
protocol_name = 'k-NN, DINO weighted voting (k=20, T=0.07), cached features'
gpus = 1
model = dict(type='KNNClassifier', num_classes=1000, bank=None,  # the task sets the training features' folder
             k=20, temperature=0.07, voting='dino')
