"""Shopping recommendations: Naver Shopping search or the offline catalog, cached and rate limited."""
