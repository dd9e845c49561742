// The parts of Pipedrive's app-extensions SDK the chat pages use, as one global for
// static/ui/chat.js.
import AppExtensionsSDK, { Command, Event } from '@pipedrive/app-extensions-sdk';

window.PipedriveSdk = { AppExtensionsSDK, Command, Event };
