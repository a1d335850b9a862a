"""The Alipay payment provider (withholding agreement, RSA2), a package of its own."""
