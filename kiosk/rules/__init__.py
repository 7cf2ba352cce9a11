"""The decisions, as pure functions of scores: 1:1 verification with liveness, 1:N identification, the site's
own rules. Torch-free and Qt-free."""
