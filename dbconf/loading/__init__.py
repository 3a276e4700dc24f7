"""The loading layer: YAML files, ``.env`` files and the environment → one validated profile.

:mod:`dbconf.loading.loader` is the entry point (:func:`~dbconf.loading.loader.load_profile`);
the other modules are its steps: reading files safely (``files``, ``yamlfile``, ``yamlerrors``,
``envfile``), picking the file and profile (``selection``, ``settings_vars``), the layers over
the file (``layers``, ``secrets_dir``, ``replica_env``), merging them (``merging``) and
``${VAR}`` interpolation (``interpolation``).

Imports the configuration layer (:mod:`dbconf.config`), never the runtime, with one
exception: the loader runs :func:`dbconf.runtime.rules.build_problems` so that a profile whose
drivers are missing or whose settings conflict fails at load.
"""
