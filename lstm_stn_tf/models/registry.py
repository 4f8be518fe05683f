"""A small registry of model builders: `build_model("lstm_stn")`."""

import difflib

from lstm_stn_tf.errors import UserError

_BUILDERS = {}


def register_model(builder):
    """Registers `builder` under its function name."""
    _BUILDERS[builder.__name__] = builder
    return builder


def list_models():
    """The names `build_model` accepts."""
    return sorted(_BUILDERS)


def model_options(name):
    """The options (keyword arguments) the registered model `name` takes."""
    import inspect

    return tuple(inspect.signature(_BUILDERS[name]).parameters)


def build_model(name, **overrides):
    """Builds the registered model `name`, its defaults replaced by `overrides`.

    Example: `build_model("lstm_stn", n_digits=1, image_size=(60, 60))`.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(str(name), list_models(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(
            f"unknown model {name!r}; expected one of {', '.join(list_models())}.{hint}"
        )
    try:
        return _BUILDERS[name](**overrides)
    except UserError:
        raise
    except ValueError as error:  # Keras refuses a value deep inside, e.g. Dense(units=0)
        options = ", ".join(f"{key}={value!r}" for key, value in sorted(overrides.items()))
        raise UserError(f"model {name!r} cannot be built with {options}: {error}") from None
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        accepted = model_options(name)
        refused = sorted(set(overrides) - set(accepted))
        raise UserError(
            f"model {name!r} does not take {', '.join(refused)}; it accepts "
            f"{', '.join(accepted)}."
        ) from None
