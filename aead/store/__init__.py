"""The model store: trained models by training key. model_store.py is the one interface a
detector asks (local cache, else the tracking server, else train and publish); cache.py the
local cache (locks, atomic entries); shared.py the tracking server as a store shared by every
worker."""
