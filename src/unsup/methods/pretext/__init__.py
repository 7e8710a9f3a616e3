"""Pretext methods: a supervised task invented from the images themselves
(jigsaw puzzles, relative patch position, patch co-occurrence, Exemplar
surrogate classes, rotation, stereo view synthesis). Each is a generator of
task inputs and targets, batched on the device, plus a head on the shared
encoder (see ``task.PretextTask``); ``patches`` holds the batched patch
geometry they share."""
