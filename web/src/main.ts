import { createApp } from "vue";
import App from "./App.vue";
import "./style.css";
import { locale } from "./messages";

document.documentElement.lang = locale.value;
createApp(App).mount("#root");
