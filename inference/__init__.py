"""Django-free inference: catalog -> pool -> engine (one per model).

The engine batches every active request of a model into each forward step on a
worker thread and hands text pieces to asyncio consumers.
"""
