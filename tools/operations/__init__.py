"""Operations on a running installation: replay, promote, batch classification."""
