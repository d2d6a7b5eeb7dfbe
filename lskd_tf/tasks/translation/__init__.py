"""Machine translation: parallel corpora, a joint subword vocabulary and Transformer models.

Data: `lskd_tf.tasks.translation.data` (datasets, batches), `.corpus` (the embedded
synthetic corpus), `.tokenizer` (the SentencePiece vocabulary).
"""
