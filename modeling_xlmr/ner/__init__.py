"""Named-entity recognition (token classification) across languages: tags and entities (`tags`), data
(`data`), word/piece alignment and sliding windows (`alignment`), entity-level scores (`metrics`), `Trainer`
runs (`training`, needs the `finetune` extra) and prediction over files (`prediction`).

Metrics need `seqeval` (the `ner` extra), imported only where scores are computed."""
