"""Product features, one package each: models, a pure decide/parse part, a service that writes."""
