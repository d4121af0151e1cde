"""Scene inference: the streaming sliding-window engine (`engine`), pure tiling arithmetic
(`tiling`), the model backend interface (`backend`), scene opening and scaling (`scene`),
writers (`writers`) and the library API of `sarmae segment / embed / classify` (`api`)."""
